/* Winograd F(4x4, 3x3) tile transforms, fused with the tile gather and scatter.
 *
 * The eager form of anomalyclip/kernels/winograd.py moves every tile through memory three
 * times (pad, gather copy, a 36x36 transform GEMM that runs far below the matmul rate);
 * here each tile is read once, transformed with the sparse 1-D transforms applied along
 * rows then columns, and written once. Channels are the innermost, contiguous axis, so
 * every inner loop is a plain vectorisable loop over channels.
 *
 * Layouts (element strides, channels contiguous):
 *   padded input xp   (b, Hp, Wp, C) contiguous, Hp = 4*th + 2, Wp = 4*tw + 2
 *   Winograd domain   (36, T, C) contiguous, T = b*th*tw, position p = 6*a + c where a is
 *                     the row (H) index and c the column (W) index of the 6x6 tile
 *   output / gradient (b, H, W, F) with image stride sn and row stride sh, column stride F
 *
 * Every function handles the tiles [t0, t1) (or the images [n0, n1) for the scatter-add)
 * so that callers can split the work over threads; scratch lives on the stack, per call.
 * Transforms (Lavin & Gray 2016): B^T, A^T of F(4x4, 3x3), written out below.
 */
#include <stdint.h>
#include <string.h>

/* The four 1-D transforms over n channels, as functions with restrict-qualified rows so
 * that the compiler vectorises them without aliasing checks. */
#define DEFINE_1D(T, S)                                                                        \
    /* v = B^T d for six rows d0..d5. */                                                      \
    static inline void bt_##S(const T *restrict d0, const T *restrict d1, const T *restrict d2,  \
                              const T *restrict d3, const T *restrict d4, const T *restrict d5,  \
                              T *restrict v0, T *restrict v1, T *restrict v2, T *restrict v3,    \
                              T *restrict v4, T *restrict v5, int64_t n) {                    \
        for (int64_t c = 0; c < n; ++c) {                                                     \
            T x0 = d0[c], x1 = d1[c], x2 = d2[c], x3 = d3[c], x4 = d4[c], x5 = d5[c];         \
            v0[c] = 4 * x0 - 5 * x2 + x4;                                                     \
            v1[c] = -4 * x1 - 4 * x2 + x3 + x4;                                               \
            v2[c] = 4 * x1 - 4 * x2 - x3 + x4;                                                \
            v3[c] = -2 * x1 - x2 + 2 * x3 + x4;                                               \
            v4[c] = 2 * x1 - x2 - 2 * x3 + x4;                                                \
            v5[c] = 4 * x1 - 5 * x3 + x5;                                                     \
        }                                                                                     \
    }                                                                                         \
    /* r = B g for six rows g0..g5 (the transpose of bt). */                                  \
    static inline void b_##S(const T *restrict g0, const T *restrict g1, const T *restrict g2,   \
                             const T *restrict g3, const T *restrict g4, const T *restrict g5,   \
                             T *restrict r0, T *restrict r1, T *restrict r2, T *restrict r3,     \
                             T *restrict r4, T *restrict r5, int64_t n) {                     \
        for (int64_t c = 0; c < n; ++c) {                                                     \
            T y0 = g0[c], y1 = g1[c], y2 = g2[c], y3 = g3[c], y4 = g4[c], y5 = g5[c];         \
            r0[c] = 4 * y0;                                                                   \
            r1[c] = -4 * y1 + 4 * y2 - 2 * y3 + 2 * y4 + 4 * y5;                              \
            r2[c] = -5 * y0 - 4 * y1 - 4 * y2 - y3 - y4;                                      \
            r3[c] = y1 - y2 + 2 * y3 - 2 * y4 - 5 * y5;                                       \
            r4[c] = y0 + y1 + y2 + y3 + y4;                                                   \
            r5[c] = y5;                                                                       \
        }                                                                                     \
    }                                                                                         \
    /* s = A^T m for six rows m0..m5 (four results). */                                       \
    static inline void at_##S(const T *restrict m0, const T *restrict m1, const T *restrict m2,  \
                              const T *restrict m3, const T *restrict m4, const T *restrict m5,  \
                              T *restrict s0, T *restrict s1, T *restrict s2, T *restrict s3,    \
                              int64_t n) {                                                    \
        for (int64_t c = 0; c < n; ++c) {                                                     \
            T y0 = m0[c], y1 = m1[c], y2 = m2[c], y3 = m3[c], y4 = m4[c], y5 = m5[c];         \
            s0[c] = y0 + y1 + y2 + y3 + y4;                                                   \
            s1[c] = y1 - y2 + 2 * y3 - 2 * y4;                                                \
            s2[c] = y1 + y2 + 4 * y3 + 4 * y4;                                                \
            s3[c] = y1 - y2 + 8 * y3 - 8 * y4 + y5;                                           \
        }                                                                                     \
    }                                                                                         \
    /* m = A g for four rows g0..g3 (six results; the transpose of at). */                    \
    static inline void a_##S(const T *restrict g0, const T *restrict g1, const T *restrict g2,   \
                             const T *restrict g3, T *restrict m0, T *restrict m1,             \
                             T *restrict m2, T *restrict m3, T *restrict m4, T *restrict m5,   \
                             int64_t n) {                                                     \
        for (int64_t c = 0; c < n; ++c) {                                                     \
            T y0 = g0[c], y1 = g1[c], y2 = g2[c], y3 = g3[c];                                 \
            m0[c] = y0;                                                                       \
            m1[c] = y0 + y1 + y2 + y3;                                                        \
            m2[c] = y0 - y1 + y2 - y3;                                                        \
            m3[c] = y0 + 2 * y1 + 4 * y2 + 8 * y3;                                            \
            m4[c] = y0 - 2 * y1 + 4 * y2 - 8 * y3;                                            \
            m5[c] = y3;                                                                       \
        }                                                                                     \
    }

/* dst = src + bias, then LeakyReLU(neg) if act: an output tile's last step. */
#define DEFINE_STORE(T, S)                                                                    \
    static inline void store_##S(const T *restrict src, const T *restrict bias,               \
                                 T *restrict dst, int64_t n, int act, T neg) {                \
        if (act) {                                                                            \
            for (int64_t c = 0; c < n; ++c) {                                                 \
                T v = src[c] + bias[c];                                                       \
                dst[c] = v > 0 ? v : v * neg; /* as torch's leaky_relu */                     \
            }                                                                                 \
        } else {                                                                              \
            for (int64_t c = 0; c < n; ++c) dst[c] = src[c] + bias[c];                        \
        }                                                                                     \
    }

/* Channels per inner pass: the per-tile scratch (36 rows of CB) stays in L1. */
#define CB 64

#define DEFINE_KERNELS(T, S)                                                                  \
    DEFINE_1D(T, S)                                                                           \
    DEFINE_STORE(T, S)                                                                        \
    /* V = (B^T d B) for the tiles [t0, t1) of the padded input. */                           \
    void input_transform_##S(const T *xp, T *v, int64_t Hp, int64_t Wp, int64_t C, int64_t th, \
                            int64_t tw, int64_t T_, int64_t t0, int64_t t1) {                 \
        T z[36 * CB];                                                                         \
        int64_t ps = T_ * C, rs = Wp * C;                                                     \
        for (int64_t t = t0; t < t1; ++t) {                                                   \
            int64_t n = t / (th * tw), i = (t / tw) % th, j = t % tw;                         \
            for (int64_t c0 = 0; c0 < C; c0 += CB) {                                          \
                int64_t nc = C - c0 < CB ? C - c0 : CB;                                       \
                const T *base = xp + ((n * Hp + 4 * i) * Wp + 4 * j) * C + c0;                \
                for (int k = 0; k < 6; ++k) { /* rows: z[a][k] = sum_r BT[a][r] d[r][k] */    \
                    const T *d = base + k * C;                                                \
                    bt_##S(d, d + rs, d + 2 * rs, d + 3 * rs, d + 4 * rs, d + 5 * rs,         \
                           z + k * CB, z + (6 + k) * CB, z + (12 + k) * CB,                   \
                           z + (18 + k) * CB, z + (24 + k) * CB, z + (30 + k) * CB, nc);      \
                }                                                                             \
                for (int a = 0; a < 6; ++a) { /* columns: V[6a+b] = sum_k BT[b][k] z[a][k] */ \
                    const T *e = z + 6 * a * CB;                                              \
                    T *o = v + ((int64_t)(6 * a) * T_ + t) * C + c0;                          \
                    bt_##S(e, e + CB, e + 2 * CB, e + 3 * CB, e + 4 * CB, e + 5 * CB, o,      \
                           o + ps, o + 2 * ps, o + 3 * ps, o + 4 * ps, o + 5 * ps, nc);       \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    /* out = A^T M A (+ bias, then LeakyReLU if act) for the tiles [t0, t1), cropped to       \
     * H, W; out has image stride sn, row stride sh, column stride F. */                      \
    void output_transform_##S(const T *mm, const T *bias, T *out, int64_t sn, int64_t sh,      \
                             int64_t H, int64_t W, int64_t F, int64_t th, int64_t tw,         \
                             int64_t T_, int64_t t0, int64_t t1, int act, double slope) {     \
        T s[24 * CB], y[4 * CB], zero[CB];                                                    \
        memset(zero, 0, sizeof(zero));                                                        \
        const T neg = (T)slope;                                                               \
        int64_t ps = T_ * F;                                                                  \
        for (int64_t t = t0; t < t1; ++t) {                                                   \
            int64_t n = t / (th * tw), i = (t / tw) % th, j = t % tw;                         \
            for (int64_t c0 = 0; c0 < F; c0 += CB) {                                          \
                int64_t nc = F - c0 < CB ? F - c0 : CB;                                       \
                for (int q = 0; q < 6; ++q) { /* rows: s[u][q] = sum_p AT[u][p] M[6p+q] */    \
                    const T *m = mm + ((int64_t)q * T_ + t) * F + c0;                         \
                    at_##S(m, m + 6 * ps, m + 12 * ps, m + 18 * ps, m + 24 * ps, m + 30 * ps, \
                           s + q * CB, s + (6 + q) * CB, s + (12 + q) * CB,                   \
                           s + (18 + q) * CB, nc);                                            \
                }                                                                             \
                for (int u = 0; u < 4 && 4 * i + u < H; ++u) {                                \
                    const T *e = s + 6 * u * CB;                                              \
                    at_##S(e, e + CB, e + 2 * CB, e + 3 * CB, e + 4 * CB, e + 5 * CB, y,      \
                           y + CB, y + 2 * CB, y + 3 * CB, nc);                               \
                    T *row = out + n * sn + (4 * i + u) * sh + 4 * j * F + c0;                \
                    for (int w = 0; w < 4 && 4 * j + w < W; ++w) {                            \
                        store_##S(y + w * CB, bias ? bias + c0 : zero, row + w * F, nc, act,  \
                                  neg);                                                       \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    /* gM = A g A^T for the tiles [t0, t1): the gradient of the output transform, from an     \
     * output gradient g (b, H, W, F) read as zero beyond H, W. */                            \
    void grad_output_##S(const T *g, T *gm, int64_t sn, int64_t sh, int64_t H, int64_t W,      \
                        int64_t F, int64_t th, int64_t tw, int64_t T_, int64_t t0,            \
                        int64_t t1) {                                                         \
        T s[24 * CB]; /* s[p][w] */                                                           \
        T zero[CB];                                                                           \
        memset(zero, 0, sizeof(zero));                                                        \
        int64_t ps = T_ * F;                                                                  \
        for (int64_t t = t0; t < t1; ++t) {                                                   \
            int64_t n = t / (th * tw), i = (t / tw) % th, j = t % tw;                         \
            for (int64_t c0 = 0; c0 < F; c0 += CB) {                                          \
                int64_t nc = F - c0 < CB ? F - c0 : CB;                                       \
                for (int w = 0; w < 4; ++w) { /* rows: s[p][w] = sum_u AT[u][p] g[u][w] */   \
                    const T *r[4];                                                            \
                    for (int u = 0; u < 4; ++u)                                               \
                        r[u] = (4 * i + u < H && 4 * j + w < W)                               \
                                   ? g + n * sn + (4 * i + u) * sh + (4 * j + w) * F + c0     \
                                   : zero;                                                    \
                    a_##S(r[0], r[1], r[2], r[3], s + w * CB, s + (4 + w) * CB,               \
                          s + (8 + w) * CB, s + (12 + w) * CB, s + (16 + w) * CB,             \
                          s + (20 + w) * CB, nc);                                             \
                }                                                                             \
                for (int p = 0; p < 6; ++p) { /* columns: gM[6p+q] = sum_w AT[w][q] s[p][w] */\
                    const T *e = s + 4 * p * CB;                                              \
                    T *o = gm + ((int64_t)(6 * p) * T_ + t) * F + c0;                         \
                    a_##S(e, e + CB, e + 2 * CB, e + 3 * CB, o, o + ps, o + 2 * ps,           \
                          o + 3 * ps, o + 4 * ps, o + 5 * ps, nc);                            \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    /* gx = the sum over tiles of B gV B^T, scattered back to the unpadded (b, H, W, C) for   \
     * the images [n0, n1) (overwritten): the gradient of the input transform and padding. */ \
    void grad_input_##S(const T *gv, T *gx, int64_t H, int64_t W, int64_t C, int64_t th,       \
                       int64_t tw, int64_t T_, int64_t n0, int64_t n1) {                      \
        T z[36 * CB], w[6 * CB];                                                              \
        memset(gx + n0 * H * W * C, 0, sizeof(T) * (n1 - n0) * H * W * C);                   \
        int64_t ps = T_ * C;                                                                  \
        for (int64_t n = n0; n < n1; ++n) {                                                   \
            for (int64_t i = 0; i < th; ++i) {                                                \
                for (int64_t j = 0; j < tw; ++j) {                                            \
                    int64_t t = (n * th + i) * tw + j;                                        \
                    for (int64_t c0 = 0; c0 < C; c0 += CB) {                                  \
                        int64_t nc = C - c0 < CB ? C - c0 : CB;                               \
                        for (int b = 0; b < 6; ++b) { /* z[r][b] = sum_a BT[a][r] gV[6a+b] */ \
                            const T *e = gv + ((int64_t)b * T_ + t) * C + c0;                 \
                            b_##S(e, e + 6 * ps, e + 12 * ps, e + 18 * ps, e + 24 * ps,       \
                                  e + 30 * ps, z + b * CB, z + (6 + b) * CB,                  \
                                  z + (12 + b) * CB, z + (18 + b) * CB, z + (24 + b) * CB,    \
                                  z + (30 + b) * CB, nc);                                     \
                        }                                                                     \
                        for (int r = 0; r < 6; ++r) { /* tile rows, padded coordinates */     \
                            int64_t row = 4 * i + r - 1;                                      \
                            if (row < 0 || row >= H) continue;                                \
                            const T *e = z + 6 * r * CB;                                      \
                            b_##S(e, e + CB, e + 2 * CB, e + 3 * CB, e + 4 * CB, e + 5 * CB,  \
                                  w, w + CB, w + 2 * CB, w + 3 * CB, w + 4 * CB, w + 5 * CB,  \
                                  nc);                                                        \
                            for (int k = 0; k < 6; ++k) {                                     \
                                int64_t col = 4 * j + k - 1;                                  \
                                if (col < 0 || col >= W) continue;                            \
                                T *dst = gx + ((n * H + row) * W + col) * C + c0;             \
                                const T *src = w + k * CB;                                    \
                                for (int64_t c = 0; c < nc; ++c) dst[c] += src[c];            \
                            }                                                                 \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
