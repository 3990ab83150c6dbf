/* Fused max/min reduction of a MAM layer on the CPU.
 *
 * For every (b, i):
 *   vmax[b, i] = max_j W[i, j] * x[b, j],  imax[b, i] = first j reaching it
 *   vmin[b, i] = min_j W[i, j] * x[b, j],  imin[b, i] = first j reaching it
 * without materialising the B x M x N products. Zero products take part, as
 * the arithmetic contract says; ties keep the first index (strict compares),
 * which is what torch.max / torch.min return.
 *
 * Like a GEMM, the work is register-blocked: a micro-tile of RB batch rows x
 * RI outputs keeps its running max/min (and indices) in vector registers over
 * the whole input loop. The caller packs the operands into panels so each
 * micro-tile reads memory contiguously and pads them to whole tiles:
 *   xp [Bp/RB][N][RB]  (batch rows padded with zeros)
 *   wp [Mp/RI][N][RI]  (output rows padded with zeros)
 *   outputs [Bp][Mp], row-major.
 * W panels are spread over `threads` OpenMP threads (ctypes releases the GIL).
 */
#include <stdint.h>

#define RI 8
#define RB_V 6   /* batch rows per micro-tile, values only */
#define RB_I 3   /* batch rows per micro-tile, with indices */

typedef struct {
    const float *xp, *wp;
    int64_t Bp, N, Mp;
    float *vmax, *vmin;
    int64_t *imax, *imin;    /* NULL: values only */
} job_t;

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* Lane operations: AVX instructions where the compiler targets AVX, portable
 * vector-extension code elsewhere. gt/lt give all-ones lanes where true;
 * sel(m, a, b) takes a where m is all-ones, else b. */
#if defined(__AVX__)
#include <immintrin.h>
static inline v8f vmax(v8f a, v8f b) { return (v8f)_mm256_max_ps((__m256)a, (__m256)b); }
static inline v8f vmin(v8f a, v8f b) { return (v8f)_mm256_min_ps((__m256)a, (__m256)b); }
static inline v8i gt(v8f a, v8f b) { return (v8i)_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_GT_OQ); }
static inline v8i lt(v8f a, v8f b) { return (v8i)_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_LT_OQ); }
static inline v8f self(v8i m, v8f a, v8f b) {
    return (v8f)_mm256_blendv_ps((__m256)b, (__m256)a, (__m256)m);
}
static inline v8i seli(v8i m, v8i a, v8i b) {
    return (v8i)_mm256_blendv_ps((__m256)b, (__m256)a, (__m256)m);
}
#else
static inline v8i gt(v8f a, v8f b) { return a > b; }
static inline v8i lt(v8f a, v8f b) { return a < b; }
static inline v8f self(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }
static inline v8i seli(v8i m, v8i a, v8i b) { return (a & m) | (b & ~m); }
static inline v8f vmax(v8f a, v8f b) { return self(gt(a, b), a, b); }
static inline v8f vmin(v8f a, v8f b) { return self(lt(a, b), a, b); }
#endif

static void micro_values(const float *restrict xp, const float *restrict wp, int64_t N,
                         float *restrict omax, float *restrict omin, int64_t ldo) {
    v8f mx[RB_V], mn[RB_V];
    for (int b = 0; b < RB_V; b++) {
        for (int i = 0; i < RI; i++) { mx[b][i] = -3.402823466e38f; mn[b][i] = 3.402823466e38f; }
    }
    for (int64_t j = 0; j < N; j++) {
        v8f w;
        __builtin_memcpy(&w, wp + j * RI, sizeof w);
        const float *x = xp + j * RB_V;
        for (int b = 0; b < RB_V; b++) {
            const v8f p = x[b] * w;
            mx[b] = vmax(p, mx[b]);
            mn[b] = vmin(p, mn[b]);
        }
    }
    for (int b = 0; b < RB_V; b++)
        for (int i = 0; i < RI; i++) { omax[b * ldo + i] = mx[b][i]; omin[b * ldo + i] = mn[b][i]; }
}

static void micro_indices(const float *restrict xp, const float *restrict wp, int64_t N,
                          float *restrict omax, float *restrict omin,
                          int64_t *restrict oimax, int64_t *restrict oimin, int64_t ldo) {
    v8f mx[RB_I], mn[RB_I];
    v8i ix[RB_I], in[RB_I];
    for (int b = 0; b < RB_I; b++) {
        for (int i = 0; i < RI; i++) {
            mx[b][i] = -3.402823466e38f; mn[b][i] = 3.402823466e38f; ix[b][i] = 0; in[b][i] = 0;
        }
    }
    for (int64_t j = 0; j < N; j++) {
        v8f w;
        __builtin_memcpy(&w, wp + j * RI, sizeof w);
        const float *x = xp + j * RB_I;
        v8i c;
        for (int i = 0; i < RI; i++) c[i] = (int32_t)j;
        for (int b = 0; b < RB_I; b++) {
            const v8f p = x[b] * w;
            const v8i g = gt(p, mx[b]), l = lt(p, mn[b]);
            mx[b] = self(g, p, mx[b]);
            ix[b] = seli(g, c, ix[b]);
            mn[b] = self(l, p, mn[b]);
            in[b] = seli(l, c, in[b]);
        }
    }
    for (int b = 0; b < RB_I; b++)
        for (int i = 0; i < RI; i++) {
            omax[b * ldo + i] = mx[b][i]; omin[b * ldo + i] = mn[b][i];
            oimax[b * ldo + i] = ix[b][i]; oimin[b * ldo + i] = in[b][i];
        }
}

static void run_panel(const job_t *j, int64_t p) {
    const int rb = j->imax ? RB_I : RB_V;
    const float *wp = j->wp + p * j->N * RI;
    for (int64_t q = 0; q < j->Bp / rb; q++) {
        const float *xp = j->xp + q * j->N * rb;
        const int64_t o = q * rb * j->Mp + p * RI;
        if (j->imax)
            micro_indices(xp, wp, j->N, j->vmax + o, j->vmin + o, j->imax + o, j->imin + o, j->Mp);
        else
            micro_values(xp, wp, j->N, j->vmax + o, j->vmin + o, j->Mp);
    }
}

/* Tile sizes the caller must pad to: RI outputs, and RB_V / RB_I batch rows. */
int mam_tile(int which) { return which == 0 ? RI : which == 1 ? RB_V : RB_I; }

int mam_maxmin_f32(const float *xp, const float *wp, int64_t Bp, int64_t N, int64_t Mp,
                   float *vmax, float *vmin, int64_t *imax, int64_t *imin, int threads) {
    const int rb = imax ? RB_I : RB_V;
    if (N <= 0) return 1;
    if (Mp % RI || Bp % rb) return 3;
    const int64_t panels = Mp / RI;
    if (panels == 0 || Bp == 0) return 0;
    if (threads < 1) threads = 1;
    const job_t job = {xp, wp, Bp, N, Mp, vmax, vmin, imax, imin};
    /* Loaded into a process that has imported torch, libgomp.so.1 resolves to
     * torch's own OpenMP runtime, so this loop runs on torch's worker threads
     * instead of competing with them. */
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < panels; p++) run_panel(&job, p);
    return 0;
}
