"""``anomaly bench all --readme``: the README's performance block is replaced, nothing else."""

from __future__ import annotations

import pytest

from anomalyclip.bench.all import BEGIN, END, write_readme
from anomalyclip.errors import AnomalyError


def test_readme_block_is_replaced_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    before = "# title\n\ntext before\n"
    after = "\n## Next\ntext after, with a | table | row |\n"
    readme.write_text(f"{before}{BEGIN}\nold numbers\n{END}{after}")
    write_readme(readme, "| stage | new |\n|---|---|")
    assert readme.read_text() == f"{before}{BEGIN}\n| stage | new |\n|---|---|\n{END}{after}"
    write_readme(readme, "again")  # idempotent: the markers stay, one block
    assert readme.read_text().count(BEGIN) == 1 and "again" in readme.read_text()
    assert "new |" not in readme.read_text()


def test_readme_without_the_block_is_an_error_naming_the_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(AnomalyError, match="README.md: no '<!-- bench:all -->'"):
        write_readme(readme, "x")
    assert readme.read_text() == "# no markers here\n"
