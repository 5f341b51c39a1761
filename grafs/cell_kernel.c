/*
 * Fused CPU kernel of the GRAFS mixed activation cell (float32), loaded by grafs/fused.py.
 *
 *   f(x) = b1(u2(b0(u0(x), u1(x))), u3(x)),  every slot a weighted sum of its active ops.
 *
 * Why a kernel: in plain PyTorch every op of every slot is a pass over memory and autograd keeps
 * every intermediate (~110 tensors per activation site). Here each thread walks its elements in
 * blocks of BLOCK floats that stay in cache, the forward pass keeps nothing, and the backward
 * pass recomputes the forward block by block from the saved input, evaluating every op's value
 * and derivative together once. The three unary slots that read x (u0, u1, u3) share each op
 * evaluation, quantities several ops read (exp, sigmoid, 1 / (1 + x^2), exp(-x^2 / 2)) are computed
 * once per block, and the elementwise math calls glibc's vector math library (libmvec) when
 * GRAFS_VECTOR_MATH is defined. Which ops each slot sums with which weights is worked out once per
 * call (group_schedule), not per block. Ops that are linear in x fold into one term per slot, the
 * piecewise-linear ones into two shared rows (piecewise_linear), and the linear binary ops of a
 * slot into one pass (binary_linear). Sums run in several registers at a time (SPAN), so that consecutive additions do
 * not wait for each other; in the full cell each op's values are read once for the three slots
 * that read x (sums_dense). Each block asks for the next block's tensors ahead (prefetch_block), and
 * each thread's workspace lies in one huge page where the system grants it. For fixed weights and
 * betas (a found activation) one forward-mode pass gives the output and its derivative by x
 * (tangent_task), which is all such a node keeps for its backward pass.
 *
 * The math must match grafs/ops.py (the single source of truth); tests/test_cell.py compares
 * outputs and gradients with the plain PyTorch path. Derivatives follow PyTorch's autograd
 * formulas, including its conventions at kinks: max/min ties split the gradient 1/2, and whether a
 * clamp passes the gradient at its bounds (PyTorch changed this between versions) is the `edges`
 * argument, which the loader reads from the installed PyTorch.
 *
 * Layout (flat over the six slots u0, u1, b0, u2, u3, b1, candidates in ops.py order):
 *   code[k]    op code (OP_NAMES order), active[k] 0/1, w[k] mixture weight, beta[k] scalar;
 *   offset[s]  index of slot s's first candidate, offset[6] the total.
 * Unary slots all hold the same candidate list, as do binary slots.
 * GRAFS_SQRT_FLOOR, GRAFS_SQRT_INF, GRAFS_CBRT_INF, GRAFS_LOG_INF and GRAFS_ASINH_INF are
 * defined by the loader from ops.py.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifdef GRAFS_VECTOR_MATH
/* Declaring the libmvec variants lets the compiler vectorize loops that call these functions
 * without -ffast-math (which would also change NaN/inf semantics and the process's FP flags). */
#define VECTOR_VARIANT __attribute__((simd("notinbranch")))
VECTOR_VARIANT float expf(float);
VECTOR_VARIANT float expm1f(float);
VECTOR_VARIANT float log1pf(float);
VECTOR_VARIANT float sinhf(float);
VECTOR_VARIANT float tanhf(float);
VECTOR_VARIANT float asinhf(float);
VECTOR_VARIANT float atanf(float);
VECTOR_VARIANT float erff(float);
#endif

#define BLOCK 256
#define CHUNK 16 /* elements in one vector register */
#define SPAN 64  /* elements summed at a time, in SPAN / CHUNK independent registers; divides BLOCK */
#define PARTS (SPAN / CHUNK)
#define DENSE 32  /* elements of the three slots' sums at a time when each op is in every slot */
#define GRAIN 32768
#define MAX_UNARY 64
#define ROWS (MAX_UNARY + 2) /* value rows per group: one per candidate, then relu(x) and min(x, 0) */
#define MAX_CANDIDATES 256
#define SLOTS 6
#define MAX_THREADS 32
#define SIMD _Pragma("omp simd")

enum {
    U_IDENTITY, U_NEG, U_ABS, U_SQUARE, U_CUBE, U_SQRT, U_ADD_BETA, U_MUL_BETA, U_BETA, U_EXP, U_SINH,
    U_TANH, U_ASINH, U_ATAN, U_RELU, U_MIN0, U_SIGMOID, U_SOFTPLUS, U_ERF, U_SILU, U_GELU, U_ELU,
    U_LEAKY_RELU, B_ADD, B_SUB, B_MUL, B_MAX, B_MIN, B_SIG_MUL, B_BETA_MIX, B_LEFT, B_RIGHT,
    U_NEGATIVE_PART /* min(x, 0) with derivative [x < 0]: internal, see piecewise_linear */
};

static const char OP_NAMES[] =
    "identity neg abs square cube sqrt add_beta mul_beta beta exp sinh tanh asinh atan relu min0 "
    "sigmoid softplus erf silu gelu elu leaky_relu add sub mul max min sig_mul beta_mix left right";

const char *grafs_cell_op_names(void) { return OP_NAMES; }

typedef struct {
    const int32_t *code;
    const int32_t *active;
    const float *w;
    const float *beta;
    const int32_t *offset;
    int bounded;
    int edges;     /* 1: a clamp passes the gradient at its bounds, 0: only strictly inside */
    int gradients; /* 1: the backward pass computes weight and beta gradients, 0: only the input's */
} Cell;

static inline float clampf(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* 1 where clamp(v, lo, hi) passes the gradient on, else 0. */
static inline float inside(float v, float lo, float hi, int edges) {
    /* Bitwise, not branching, so that loops over it vectorize. */
    return (float)(((v > lo) & (v < hi)) | (edges & ((v == lo) | (v == hi))));
}

static inline float sigmoid_scalar(float v) { return 1.0f / (1.0f + expf(-v)); }

/* The nonlinear unary ops: the value at v, the derivative into *d. Quantities several ops read are
 * computed once per block for the ops that read them (input_prepare): e = exp(v), s = sigmoid(v),
 * and for derivatives q = 1 / (1 + v^2) and h = exp(-v^2 / 2). After inlining, the compiler drops
 * the derivative where it is not used. */
#define POINT(name)                                                                                    \
    static inline float name(float v, float e, float s, float q, float h, int bounded, int edges, float *d)

POINT(p_square) {
    const float r = GRAFS_SQRT_INF, c = bounded ? clampf(v, -r, r) : v;
    *d = 2.0f * c * (bounded ? inside(v, -r, r, edges) : 1.0f);
    return c * c;
}
POINT(p_cube) {
    const float r = GRAFS_CBRT_INF, c = bounded ? clampf(v, -r, r) : v;
    *d = 3.0f * (c * c) * (bounded ? inside(v, -r, r, edges) : 1.0f);
    return c * c * c;
}
POINT(p_sqrt) {
    /* The floor applies bounded or not (the gradient of sqrt is infinite at 0). */
    const float f = sqrtf(v < GRAFS_SQRT_FLOOR ? GRAFS_SQRT_FLOOR : v);
    *d = inside(v, GRAFS_SQRT_FLOOR, INFINITY, edges) / (2.0f * f);
    return f;
}
POINT(p_exp) {
    const float l = GRAFS_LOG_INF, f = bounded && v > l ? expf(GRAFS_LOG_INF) : e;
    *d = f * (bounded ? inside(v, -INFINITY, l, edges) : 1.0f);
    return f;
}
POINT(p_sinh) {
    /* cosh from exp(v); a select, not a product with the mask, as 1 / exp(v) is inf below -88. */
    const float a = GRAFS_ASINH_INF, c = bounded ? clampf(v, -a, a) : v;
    const float pass = bounded ? inside(v, -a, a, edges) : 1.0f, value = sinhf(c);
    /* cosh = exp - sinh, without a division; exp(v) = inf (v above ~88.7) gives inf. */
    *d = pass > 0.0f ? (e == INFINITY ? INFINITY : e - value) : 0.0f;
    return value;
}
POINT(p_tanh) { const float t = tanhf(v); *d = 1.0f - t * t; return t; }
POINT(p_asinh) { *d = sqrtf(q); return asinhf(v); }
POINT(p_atan) { *d = q; return atanf(v); }
POINT(p_relu) { *d = v > 0.0f ? 1.0f : 0.0f; return v > 0.0f ? v : (v != v ? v : 0.0f); }
POINT(p_negative_part) { *d = v < 0.0f ? 1.0f : 0.0f; return v > 0.0f ? 0.0f : v; }
POINT(p_sigmoid) { *d = (1.0f - s) * s; return s; }
POINT(p_softplus) {
    /* PyTorch's softplus: beta 1, linear above the threshold 20. */
    const float soft = log1pf(e);
    *d = v > 20.0f ? 1.0f : s;
    return v > 20.0f ? v : soft;
}
POINT(p_erf) { *d = (float)M_2_SQRTPI * (h * h); return erff(v); }
POINT(p_silu) { *d = s * (1.0f + v * (1.0f - s)); return v * s; }
POINT(p_gelu) {
    const float cdf = 0.5f * (1.0f + erff(v * (float)M_SQRT1_2));
    *d = cdf + v * h * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
    return v * cdf;
}
POINT(p_elu) {
    const float m = expm1f(v);
    *d = v > 0.0f ? 1.0f : e;
    return v > 0.0f ? v : m;
}

/* The unary ops that are linear in x (w * op(x) = slope * x + shift): folded, not evaluated. */
static int is_linear_unary(int code) {
    return code == U_IDENTITY || code == U_NEG || code == U_ADD_BETA || code == U_MUL_BETA || code == U_BETA;
}

/* abs, relu, min0 and leaky_relu are a * relu(x) + b * min(x, 0): their values are read from two
 * shared rows. The rows' derivatives, [x > 0] and [x < 0], give theirs except where x is 0 or NaN,
 * where each op adds `zero` or `nan` (PyTorch's conventions; min0 passes the gradient at 0 when
 * clamps pass it at their bounds). Returns whether the op is one of them. */
static int piecewise_linear(int code, int edges, float *a, float *b, float *zero, float *nan) {
    switch (code) {
    case U_ABS: *a = 1.0f, *b = -1.0f, *zero = 0.0f, *nan = 0.0f; return 1;
    case U_RELU: *a = 1.0f, *b = 0.0f, *zero = 0.0f, *nan = 1.0f; return 1; /* NaN is not <= 0: passes */
    case U_MIN0: *a = 0.0f, *b = 1.0f, *zero = (float)edges, *nan = 0.0f; return 1;
    case U_LEAKY_RELU: *a = 1.0f, *b = 0.01f, *zero = 0.01f, *nan = 0.01f; return 1;
    default: return 0;
    }
}

/* Which shared quantities an op reads, for its value (forward) or its value and derivative. */
static int needs_sigmoid(int code, int derivative) {
    return code == U_SIGMOID || code == U_SILU || (derivative && code == U_SOFTPLUS);
}
static int needs_exp(int code, int derivative) {
    return code == U_EXP || code == U_SOFTPLUS || needs_sigmoid(code, derivative) ||
           (derivative && (code == U_SINH || code == U_ELU));
}
static int needs_reciprocal(int code, int derivative) { return derivative && (code == U_ASINH || code == U_ATAN); }
static int needs_gauss(int code, int derivative) { return derivative && (code == U_ERF || code == U_GELU); }

/* One block of the input of a group of unary slots, with exp and sigmoid computed on demand. The
 * ops are evaluated on `padded` elements, n rounded up to whole chunks: a ragged block's input is
 * copied into `pad` and zero-filled, so the chunked loops never read past the caller's tensor. */
typedef struct {
    const float *x;
    int n, padded, have_exp, have_sigmoid, have_reciprocal, have_gauss;
    float exp[BLOCK], sigmoid[BLOCK], reciprocal[BLOCK], gauss[BLOCK], pad[BLOCK];
} Input;

static void input_init(Input *in, const float *x, int n) {
    in->n = n;
    in->padded = (n + SPAN - 1) / SPAN * SPAN;
    in->x = x;
    if (in->padded != n) {
        memcpy(in->pad, x, sizeof(float) * n);
        memset(in->pad + n, 0, sizeof(float) * (in->padded - n));
        in->x = in->pad;
    }
    in->have_exp = in->have_sigmoid = in->have_reciprocal = in->have_gauss = 0;
}

static void input_prepare(Input *in, int code, int derivative) {
    if (needs_exp(code, derivative) && !in->have_exp) {
        SIMD for (int i = 0; i < in->padded; i++) in->exp[i] = expf(in->x[i]);
        in->have_exp = 1;
    }
    if (needs_sigmoid(code, derivative) && !in->have_sigmoid) {
        /* e / (1 + e), one division instead of the two of 1 / (1 + 1 / e); exp(x) = inf gives 1 and
         * exp(x) = 0 gives 0, as PyTorch's 1 / (1 + exp(-x)) does. */
        SIMD for (int i = 0; i < in->padded; i++) {
            const float e = in->exp[i];
            in->sigmoid[i] = e == INFINITY ? 1.0f : e / (1.0f + e);
        }
        in->have_sigmoid = 1;
    }
    if (needs_reciprocal(code, derivative) && !in->have_reciprocal) {
        SIMD for (int i = 0; i < in->padded; i++) in->reciprocal[i] = 1.0f / (in->x[i] * in->x[i] + 1.0f);
        in->have_reciprocal = 1;
    }
    if (needs_gauss(code, derivative) && !in->have_gauss) {
        /* exp(-v^2 / 2) for GELU; erf's exp(-v^2) is its square. */
        SIMD for (int i = 0; i < in->padded; i++) in->gauss[i] = expf(-0.5f * in->x[i] * in->x[i]);
        in->have_gauss = 1;
    }
}

static float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static float total(const float *a, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i];
    return s;
}

/*
 * A group of up to three unary slots reading the same input (u0, u1, u3 read x; u2 reads b0).
 * Its outputs are out[j] = sum_k w[j,k] op_k(x), and with derivatives deriv[j] = d out[j] / dx.
 * Each active op is evaluated once into value[k] (and its derivative into dvalue[k]); the slots'
 * sums then run chunk by chunk in registers, one load per op and element, instead of updating
 * every slot's output in memory for every op. An op adds only into the slots where it is active,
 * so its NaN or inf values stay out of the others, as in the reference. The ops linear in x
 * (identity, neg and the beta ops) fold into out[j] = slope[j] * x + shift[j] + ...
 */
typedef struct {
    int used, candidate[ROWS], code[ROWS]; /* the rows evaluated: active nonlinear ops, shared rows */
    int terms[3], term[3][ROWS];           /* per slot: which of them it sums ... */
    float weight[3][ROWS];                 /* ... with which weights */
    float zero[3], nan[3];                 /* what piecewise-linear ops add to deriv where x is 0, NaN */
    int fix_up;                            /* whether any does */
    float slope[3], shift[3];                         /* the linear ops, folded */
    int linear[3];
} Schedule;

typedef struct {
    int slots[3], nslots;
    float *out[3], *deriv[3];
    float (*value)[BLOCK], (*dvalue)[BLOCK]; /* [row][BLOCK]: see Schedule */
    Schedule schedule;                       /* the same for every block of a call: see group_schedule */
} Group;

typedef float Chunk __attribute__((vector_size(CHUNK * sizeof(float))));

static inline Chunk chunk_load(const float *p) {
    Chunk v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void chunk_store(float *p, Chunk v) { memcpy(p, &v, sizeof v); }

static inline float chunk_sum(Chunk v) {
    float s = 0.0f;
    for (int i = 0; i < CHUNK; i++) s += v[i];
    return s;
}

/* sums[j] = sum_i v[i] * u[j][i] for j < count (at most 3). Each sum runs in PARTS registers, so
 * that its additions do not wait for each other, then adds the tail element by element. */
static void dot_products(const float *v, const float *const *u, int count, int n, float *sums) {
    const Chunk zero = {0};
    Chunk acc[3][PARTS];
    for (int j = 0; j < 3; j++)
        for (int p = 0; p < PARTS; p++) acc[j][p] = zero;
    int i = 0;
    for (; i + SPAN <= n; i += SPAN)
        for (int p = 0; p < PARTS; p++) {
            const Chunk vv = chunk_load(v + i + p * CHUNK);
            acc[0][p] += vv * chunk_load(u[0] + i + p * CHUNK);
            if (count > 1) acc[1][p] += vv * chunk_load(u[1] + i + p * CHUNK);
            if (count > 2) acc[2][p] += vv * chunk_load(u[2] + i + p * CHUNK);
        }
    for (int j = 0; j < count; j++) {
        Chunk total = zero;
        for (int p = 0; p < PARTS; p++) total += acc[j][p];
        float s = chunk_sum(total);
        for (int k = i; k < n; k++) s += v[k] * u[j][k];
        sums[j] = s;
    }
}

/* sums[r][j] = sum_i rows[r][i] * grads[j][i] for ROWS rows and GRADS (at most 3) gradients: each
 * gradient chunk loaded serves all the rows, and the ROWS * GRADS sums stay in registers. */
#define ROW_DOTS(NAME, ROWS, GRADS)                                                                    \
    static void NAME(const float *const *rows, const float *const *grads, int n, float (*sums)[3]) {  \
        const Chunk zero = {0};                                                                        \
        Chunk acc[ROWS][GRADS];                                                                        \
        for (int r = 0; r < ROWS; r++)                                                                 \
            for (int j = 0; j < GRADS; j++) acc[r][j] = zero;                                          \
        int i = 0;                                                                                     \
        for (; i + CHUNK <= n; i += CHUNK) {                                                           \
            Chunk g[GRADS];                                                                            \
            for (int j = 0; j < GRADS; j++) g[j] = chunk_load(grads[j] + i);                           \
            for (int r = 0; r < ROWS; r++) {                                                           \
                const Chunk v = chunk_load(rows[r] + i);                                               \
                for (int j = 0; j < GRADS; j++) acc[r][j] += v * g[j];                                 \
            }                                                                                          \
        }                                                                                              \
        for (int r = 0; r < ROWS; r++)                                                                 \
            for (int j = 0; j < GRADS; j++) {                                                          \
                float sum = chunk_sum(acc[r][j]);                                                      \
                for (int k = i; k < n; k++) sum += rows[r][k] * grads[j][k];                           \
                sums[r][j] = sum;                                                                      \
            }                                                                                          \
    }
ROW_DOTS(row_dots_3, 4, 3)
ROW_DOTS(row_dots_1, 8, 1)

/* sums[q][j] = sum_i rows[q][i] * grads[j][i] for q < count and j < ngrads (1 or 3), rows taken a
 * few at a time; a last partial group is filled up with `filler`, a row whose sums are dropped. */
static void weight_dot_products(const float *const *rows, int count, const float *const *grads, int ngrads, int n,
                                const float *filler, float (*sums)[3]) {
    const int group = ngrads == 3 ? 4 : 8;
    for (int q = 0; q < count; q += group) {
        const float *batch[8];
        float batch_sums[8][3];
        for (int r = 0; r < group; r++) batch[r] = q + r < count ? rows[q + r] : filler;
        if (ngrads == 3) row_dots_3(batch, grads, n, batch_sums);
        else row_dots_1(batch, grads, n, batch_sums);
        for (int r = 0; r < group && q + r < count; r++)
            for (int j = 0; j < ngrads; j++) sums[q + r][j] = batch_sums[r][j];
    }
}

#define UNARY_CASE(CODE, FN)                                                                           \
    case CODE:                                                                                         \
        if (!derivative) {                                                                             \
            SIMD for (int i = 0; i < n; i++) {                                                         \
                float d;                                                                               \
                value[i] = FN(x[i], e[i], s[i], q[i], h[i], bounded, edges, &d);                      \
            }                                                                                          \
        } else {                                                                                       \
            SIMD for (int i = 0; i < n; i++)                                                           \
                value[i] = FN(x[i], e[i], s[i], q[i], h[i], bounded, edges, &dvalue[i]);                   \
        }                                                                                              \
        break;

/* value[i] (and dvalue[i]) = op(x[i]) and its derivative, for the padded block. */
static void evaluate_op(const Cell *cell, int code, const Input *in, float *value, float *dvalue, int derivative) {
    const int n = in->padded, bounded = cell->bounded, edges = cell->edges;
    const float *x = in->x, *e = in->exp, *s = in->sigmoid, *q = in->reciprocal, *h = in->gauss;
    switch (code) {
        UNARY_CASE(U_SQUARE, p_square)
        UNARY_CASE(U_CUBE, p_cube)
        UNARY_CASE(U_SQRT, p_sqrt)
        UNARY_CASE(U_EXP, p_exp)
        UNARY_CASE(U_SINH, p_sinh)
        UNARY_CASE(U_TANH, p_tanh)
        UNARY_CASE(U_ASINH, p_asinh)
        UNARY_CASE(U_ATAN, p_atan)
        UNARY_CASE(U_RELU, p_relu)
        UNARY_CASE(U_NEGATIVE_PART, p_negative_part)
        UNARY_CASE(U_SIGMOID, p_sigmoid)
        UNARY_CASE(U_SOFTPLUS, p_softplus)
        UNARY_CASE(U_ERF, p_erf)
        UNARY_CASE(U_SILU, p_silu)
        UNARY_CASE(U_GELU, p_gelu)
        UNARY_CASE(U_ELU, p_elu)
    }
}

/* What group_forward computes for every block of a call, worked out once per call and thread. */
static void group_schedule(const Cell *cell, Group *g) {
    Schedule *p = &g->schedule;
    const int first = cell->offset[g->slots[0]], count = cell->offset[g->slots[0] + 1] - first;
    float shared[2][3] = {{0.0f}}; /* per slot, the weights of the shared rows relu(x) and min(x, 0) */
    int reads[2][3] = {{0}};
    memset(p, 0, sizeof *p);
    for (int k = 0; k < count; k++) {
        const int code = cell->code[first + k];
        float a, b, zero, nan;
        const int piecewise = piecewise_linear(code, cell->edges, &a, &b, &zero, &nan);
        int any = 0;
        for (int j = 0; j < g->nslots; j++) {
            const int idx = cell->offset[g->slots[j]] + k;
            if (!cell->active[idx]) continue;
            const float w = cell->w[idx], beta = cell->beta[idx];
            any = 1;
            if (piecewise) {
                shared[0][j] += w * a;
                shared[1][j] += w * b;
                reads[0][j] |= a != 0.0f;
                reads[1][j] |= b != 0.0f;
                p->zero[j] += w * zero;
                p->nan[j] += w * nan;
                p->fix_up |= zero != 0.0f || nan != 0.0f;
            } else if (code == U_IDENTITY || code == U_NEG) {
                p->slope[j] += code == U_IDENTITY ? w : -w;
                p->linear[j] = 1;
            } else if (code == U_ADD_BETA) {
                p->slope[j] += w;
                p->shift[j] += w * beta;
                p->linear[j] = 1;
            } else if (code == U_MUL_BETA) {
                p->slope[j] += w * beta;
                p->linear[j] = 1;
            } else if (code == U_BETA) {
                p->shift[j] += w * beta;
            } else {
                p->term[j][p->terms[j]] = p->used;
                p->weight[j][p->terms[j]++] = w;
            }
        }
        if (!any || is_linear_unary(code) || piecewise) continue;
        p->candidate[p->used] = k;
        p->code[p->used++] = code;
    }
    for (int r = 0; r < 2; r++) {
        int any = 0;
        for (int j = 0; j < g->nslots; j++) {
            if (!reads[r][j]) continue;
            p->term[j][p->terms[j]] = p->used;
            p->weight[j][p->terms[j]++] = shared[r][j];
            any = 1;
        }
        if (!any) continue;
        p->candidate[p->used] = count + r; /* the rows after the candidates' */
        p->code[p->used++] = r == 0 ? U_RELU : U_NEGATIVE_PART;
    }
}

/* Where a slot's sums start: x is added only with add_beta or mul_beta, as 0 * x would turn an
 * infinite x into NaN. */
static inline Chunk sum_start(const Schedule *p, int j, Chunk x) {
    const Chunk zero = {0};
    return p->linear[j] ? p->slope[j] * x + p->shift[j] : zero + p->shift[j];
}

/* The slots' sums when every op is active in all three slots (the full cell): each op's row is read
 * once for the three sums, DENSE elements at a time. */
static void sums_dense(const Group *g, const Input *in, int derivative) {
    const Schedule *p = &g->schedule;
    const Chunk zero = {0};
    for (int start = 0; start < in->padded; start += DENSE) {
        Chunk o[3][DENSE / CHUNK], d[3][DENSE / CHUNK];
        for (int u = 0; u < DENSE / CHUNK; u++) {
            const Chunk x = chunk_load(in->x + start + u * CHUNK);
            for (int j = 0; j < 3; j++) {
                o[j][u] = sum_start(p, j, x);
                d[j][u] = zero + p->slope[j];
            }
        }
        for (int t = 0; t < p->used; t++) {
            const int k = p->candidate[t];
            const float w0 = p->weight[0][t], w1 = p->weight[1][t], w2 = p->weight[2][t];
            for (int u = 0; u < DENSE / CHUNK; u++) {
                const Chunk v = chunk_load(g->value[k] + start + u * CHUNK);
                o[0][u] += w0 * v;
                o[1][u] += w1 * v;
                o[2][u] += w2 * v;
            }
            if (derivative)
                for (int u = 0; u < DENSE / CHUNK; u++) {
                    const Chunk v = chunk_load(g->dvalue[k] + start + u * CHUNK);
                    d[0][u] += w0 * v;
                    d[1][u] += w1 * v;
                    d[2][u] += w2 * v;
                }
        }
        for (int j = 0; j < 3; j++)
            for (int u = 0; u < DENSE / CHUNK; u++) {
                chunk_store(g->out[j] + start + u * CHUNK, o[j][u]);
                if (derivative) chunk_store(g->deriv[j] + start + u * CHUNK, d[j][u]);
            }
    }
}

/* The slots' sums slot by slot, each over its own active ops, SPAN elements at a time. */
static void sums_by_slot(const Group *g, const Input *in, int derivative) {
    const Schedule *p = &g->schedule;
    const Chunk zero = {0};
    for (int start = 0; start < in->padded; start += SPAN) {
        Chunk x[PARTS];
        for (int u = 0; u < PARTS; u++) x[u] = chunk_load(in->x + start + u * CHUNK);
        for (int j = 0; j < g->nslots; j++) {
            Chunk o[PARTS], d[PARTS];
            for (int u = 0; u < PARTS; u++) {
                o[u] = sum_start(p, j, x[u]);
                d[u] = zero + p->slope[j];
            }
            for (int t = 0; t < p->terms[j]; t++) {
                const int k = p->candidate[p->term[j][t]];
                const float weight = p->weight[j][t];
                for (int u = 0; u < PARTS; u++) o[u] += weight * chunk_load(g->value[k] + start + u * CHUNK);
                if (derivative)
                    for (int u = 0; u < PARTS; u++) d[u] += weight * chunk_load(g->dvalue[k] + start + u * CHUNK);
            }
            for (int u = 0; u < PARTS; u++) {
                chunk_store(g->out[j] + start + u * CHUNK, o[u]);
                if (derivative) chunk_store(g->deriv[j] + start + u * CHUNK, d[u]);
            }
        }
    }
}

/* Where x is 0 or NaN, adds what the piecewise-linear ops' derivatives differ from their rows'. */
static void fix_up_kinks(const Group *g, const Input *in) {
    const Schedule *p = &g->schedule;
    const float *x = in->x;
    int special = 0;
#pragma omp simd reduction(| : special)
    for (int i = 0; i < in->n; i++) special |= (x[i] == 0.0f) | (x[i] != x[i]);
    if (!special) return;
    for (int i = 0; i < in->n; i++) {
        if (x[i] != 0.0f && x[i] == x[i]) continue;
        for (int j = 0; j < g->nslots; j++) g->deriv[j][i] += x[i] == 0.0f ? p->zero[j] : p->nan[j];
    }
}

static void group_forward(const Cell *cell, Group *g, Input *in, int derivative) {
    const Schedule *p = &g->schedule;
    for (int q = 0; q < p->used; q++) {
        input_prepare(in, p->code[q], derivative);
        evaluate_op(cell, p->code[q], in, g->value[p->candidate[q]], g->dvalue[p->candidate[q]], derivative);
    }
    const int dense = g->nslots == 3 && p->terms[0] == p->used && p->terms[1] == p->used && p->terms[2] == p->used;
    if (dense) sums_dense(g, in, derivative);
    else sums_by_slot(g, in, derivative);
    if (derivative && p->fix_up) fix_up_kinks(g, in);
}

/* Given grad[j] = d loss / d out[j]: weight and beta gradients, and adds d loss / dx into gin.
 * Each op's values are read once for the weight gradients of all the group's slots. */
static void group_backward(const Cell *cell, const Group *g, const Input *in, float *const *grad, float *gin,
                           double *gw, double *gbeta) {
    const int n = in->n, first = cell->offset[g->slots[0]], count = cell->offset[g->slots[0] + 1] - first;
    const float *x = in->x;
    const float *g0 = grad[0], *d0 = g->deriv[0];
    const float *g1 = g->nslots > 1 ? grad[1] : g0, *d1 = g->nslots > 1 ? g->deriv[1] : d0;
    const float *g2 = g->nslots > 2 ? grad[2] : g0, *d2 = g->nslots > 2 ? g->deriv[2] : d0;
    if (g->nslots == 3) {
        SIMD for (int i = 0; i < n; i++) gin[i] += g0[i] * d0[i] + g1[i] * d1[i] + g2[i] * d2[i];
    } else {
        for (int j = 0; j < g->nslots; j++) {
            const float *gj = grad[j], *dj = g->deriv[j];
            SIMD for (int i = 0; i < n; i++) gin[i] += gj[i] * dj[i];
        }
    }
    if (!cell->gradients) return;
    /* sum(grad[j] * op_k(x)) for every evaluated op k, all at once. */
    const Schedule *p = &g->schedule;
    const float *rows[ROWS];
    float value_sums[ROWS][3];
    int row_of[ROWS];
    for (int q = 0; q < p->used; q++) {
        rows[q] = g->value[p->candidate[q]];
        row_of[p->candidate[q]] = q;
    }
    weight_dot_products(rows, p->used, (const float *const *)grad, g->nslots, n, x, value_sums);
    float gsum[3] = {0.0f, 0.0f, 0.0f}, gx[3] = {0.0f, 0.0f, 0.0f};
    int sums = 0;
    for (int k = 0; k < count; k++) {
        const int code = cell->code[first + k];
        int idx[3], any = 0;
        for (int j = 0; j < g->nslots; j++) {
            idx[j] = cell->offset[g->slots[j]] + k;
            any |= cell->active[idx[j]];
        }
        if (!any) continue;
        float a, b, zero, nan;
        if (piecewise_linear(code, cell->edges, &a, &b, &zero, &nan)) {
            for (int j = 0; j < g->nslots; j++) {
                if (!cell->active[idx[j]]) continue;
                if (a != 0.0f) gw[idx[j]] += a * value_sums[row_of[count]][j];
                if (b != 0.0f) gw[idx[j]] += b * value_sums[row_of[count + 1]][j];
            }
            continue;
        }
        if (!is_linear_unary(code)) {
            for (int j = 0; j < g->nslots; j++)
                if (cell->active[idx[j]]) gw[idx[j]] += value_sums[row_of[k]][j];
            continue;
        }
        if (!sums) {
            for (int j = 0; j < g->nslots; j++) {
                gsum[j] = total(grad[j], n);
                gx[j] = dot(grad[j], x, n);
            }
            sums = 1;
        }
        for (int j = 0; j < g->nslots; j++) {
            if (!cell->active[idx[j]]) continue;
            const float w = cell->w[idx[j]], b = cell->beta[idx[j]];
            if (code == U_IDENTITY || code == U_NEG) {
                gw[idx[j]] += code == U_IDENTITY ? gx[j] : -gx[j];
            } else if (code == U_ADD_BETA) {
                gw[idx[j]] += (double)gx[j] + (double)b * gsum[j];
                gbeta[idx[j]] += (double)w * gsum[j];
            } else if (code == U_MUL_BETA) {
                gw[idx[j]] += (double)b * gx[j];
                gbeta[idx[j]] += (double)w * gx[j];
            } else {
                gw[idx[j]] += (double)b * gsum[j];
                gbeta[idx[j]] += (double)w * gsum[j];
            }
        }
    }
}

/* The linear binary ops of a slot (add, sub, beta_mix, left, right) folded into one: their weighted
 * sum is ca * a + cb * b, their input gradients ca * g and cb * g, and their weight gradients follow
 * from sum(g * a) and sum(g * b). An input no active op reads stays out (uses_a, uses_b), so that
 * its NaN or inf values do not leak through a zero coefficient, as in the reference. */
typedef struct {
    float ca, cb;
    int uses_a, uses_b, any;
} Linear;

static int is_linear_binary(int code) {
    return code == B_ADD || code == B_SUB || code == B_BETA_MIX || code == B_LEFT || code == B_RIGHT;
}

static Linear binary_linear(const Cell *cell, int slot) {
    Linear l = {0.0f, 0.0f, 0, 0, 0};
    for (int idx = cell->offset[slot]; idx < cell->offset[slot + 1]; idx++) {
        const int code = cell->code[idx];
        if (!cell->active[idx] || !is_linear_binary(code)) continue;
        const float w = cell->w[idx];
        const float s = code == B_BETA_MIX ? sigmoid_scalar(cell->beta[idx]) : 1.0f;
        l.ca += code == B_ADD || code == B_SUB || code == B_LEFT ? w : (code == B_BETA_MIX ? w * s : 0.0f);
        l.cb += code == B_ADD || code == B_RIGHT ? w : (code == B_SUB ? -w : (code == B_BETA_MIX ? w * (1.0f - s) : 0.0f));
        l.uses_a |= code != B_RIGHT;
        l.uses_b |= code != B_LEFT;
        l.any = 1;
    }
    return l;
}

/* out = ca * a + cb * b over the inputs that are read (and the same for the tangents). */
static void linear_combination(const Linear *l, const float *a, const float *b, int n, float *out) {
    if (l->uses_a && l->uses_b) {
        const float ca = l->ca, cb = l->cb;
        SIMD for (int i = 0; i < n; i++) out[i] = ca * a[i] + cb * b[i];
    } else if (l->uses_a || l->uses_b) {
        const float c = l->uses_a ? l->ca : l->cb, *v = l->uses_a ? a : b;
        SIMD for (int i = 0; i < n; i++) out[i] = c * v[i];
    } else {
        memset(out, 0, sizeof(float) * n);
    }
}

/* Forward of one binary slot: out = sum_k w_k * op_k(a, b). */
static void binary_forward(const Cell *cell, int slot, const Linear *linear, const float *a, const float *b, int n,
                           float *out) {
    const int first = cell->offset[slot], count = cell->offset[slot + 1] - first;
    const float r = GRAFS_SQRT_INF;
    const int bounded = cell->bounded;
    linear_combination(linear, a, b, n, out);
    for (int k = 0; k < count; k++) {
        const int idx = first + k;
        if (!cell->active[idx]) continue;
        const float w = cell->w[idx];
        switch (cell->code[idx]) {
        case B_MUL:
            if (bounded) SIMD for (int i = 0; i < n; i++) out[i] += w * (clampf(a[i], -r, r) * clampf(b[i], -r, r));
            else SIMD for (int i = 0; i < n; i++) out[i] += w * (a[i] * b[i]);
            break;
        case B_MAX:
            SIMD for (int i = 0; i < n; i++) out[i] += w * (a[i] >= b[i] ? a[i] : b[i]);
            break;
        case B_MIN:
            SIMD for (int i = 0; i < n; i++) out[i] += w * (a[i] <= b[i] ? a[i] : b[i]);
            break;
        case B_SIG_MUL:
            SIMD for (int i = 0; i < n; i++) out[i] += w * ((1.0f / (1.0f + expf(-a[i]))) * b[i]);
            break;
        }
    }
}

/* Backward of binary_forward: g is the gradient of out; writes ga and gb, adds into gw and gbeta. */
static void binary_backward(const Cell *cell, int slot, const Linear *linear, const float *a, const float *b, int n,
                            const float *g, float *ga, float *gb, double *gw, double *gbeta) {
    const int first = cell->offset[slot], count = cell->offset[slot + 1] - first;
    const float r = GRAFS_SQRT_INF;
    const int bounded = cell->bounded, edges = cell->edges;
    {
        const float ca = linear->uses_a ? linear->ca : 0.0f, cb = linear->uses_b ? linear->cb : 0.0f;
        SIMD for (int i = 0; i < n; i++) {
            ga[i] = ca * g[i];
            gb[i] = cb * g[i];
        }
    }
    float ga_sum = 0.0f, gb_sum = 0.0f; /* sum(g * a), sum(g * b) */
    if (linear->any) {
        const float *inputs[2] = {a, b};
        float sums[2];
        dot_products(g, inputs, 2, n, sums);
        ga_sum = sums[0];
        gb_sum = sums[1];
    }
    for (int k = 0; k < count; k++) {
        const int idx = first + k;
        if (!cell->active[idx]) continue;
        const float w = cell->w[idx];
        float acc = 0.0f;
        switch (cell->code[idx]) {
        case B_ADD:
            acc = ga_sum + gb_sum;
            break;
        case B_SUB:
            acc = ga_sum - gb_sum;
            break;
        case B_LEFT:
            acc = ga_sum;
            break;
        case B_RIGHT:
            acc = gb_sum;
            break;
        case B_BETA_MIX: {
            const float s = sigmoid_scalar(cell->beta[idx]);
            acc = s * ga_sum + (1.0f - s) * gb_sum;
            gbeta[idx] += (double)w * s * (1.0f - s) * (ga_sum - gb_sum);
            break;
        }
        case B_MUL:
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < n; i++) {
                const float ca = bounded ? clampf(a[i], -r, r) : a[i], cb = bounded ? clampf(b[i], -r, r) : b[i];
                const float ma = bounded ? inside(a[i], -r, r, edges) : 1.0f;
                const float mb = bounded ? inside(b[i], -r, r, edges) : 1.0f;
                acc += g[i] * (ca * cb);
                ga[i] += w * g[i] * cb * ma;
                gb[i] += w * g[i] * ca * mb;
            }
            break;
        case B_MAX:
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < n; i++) {
                const float da = a[i] > b[i] ? 1.0f : (a[i] == b[i] ? 0.5f : 0.0f);
                acc += g[i] * (a[i] >= b[i] ? a[i] : b[i]);
                ga[i] += w * g[i] * da;
                gb[i] += w * g[i] * (1.0f - da);
            }
            break;
        case B_MIN:
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < n; i++) {
                const float da = a[i] < b[i] ? 1.0f : (a[i] == b[i] ? 0.5f : 0.0f);
                acc += g[i] * (a[i] <= b[i] ? a[i] : b[i]);
                ga[i] += w * g[i] * da;
                gb[i] += w * g[i] * (1.0f - da);
            }
            break;
        case B_SIG_MUL:
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < n; i++) {
                const float s = 1.0f / (1.0f + expf(-a[i]));
                acc += g[i] * (s * b[i]);
                ga[i] += w * g[i] * ((1.0f - s) * s) * b[i];
                gb[i] += w * g[i] * s;
            }
            break;
        }
        gw[idx] += acc;
    }
}

/* Forward-mode derivative of binary_forward: with da = da/dx and db = db/dx given, out as in
 * binary_forward and dout = d out / dx, by the same derivative conventions as binary_backward. */
static void binary_tangent(const Cell *cell, int slot, const Linear *linear, const float *a, const float *da,
                           const float *b, const float *db, int n, float *out, float *dout) {
    const int first = cell->offset[slot], count = cell->offset[slot + 1] - first;
    const float r = GRAFS_SQRT_INF;
    const int bounded = cell->bounded, edges = cell->edges;
    linear_combination(linear, a, b, n, out);
    linear_combination(linear, da, db, n, dout);
    for (int k = 0; k < count; k++) {
        const int idx = first + k;
        if (!cell->active[idx]) continue;
        const float w = cell->w[idx];
        switch (cell->code[idx]) {
        case B_MUL:
            SIMD for (int i = 0; i < n; i++) {
                const float ca = bounded ? clampf(a[i], -r, r) : a[i], cb = bounded ? clampf(b[i], -r, r) : b[i];
                const float ma = bounded ? inside(a[i], -r, r, edges) : 1.0f;
                const float mb = bounded ? inside(b[i], -r, r, edges) : 1.0f;
                out[i] += w * (ca * cb);
                dout[i] += w * cb * ma * da[i] + w * ca * mb * db[i];
            }
            break;
        case B_MAX:
            SIMD for (int i = 0; i < n; i++) {
                const float pa = a[i] > b[i] ? 1.0f : (a[i] == b[i] ? 0.5f : 0.0f);
                out[i] += w * (a[i] >= b[i] ? a[i] : b[i]);
                dout[i] += w * pa * da[i] + w * (1.0f - pa) * db[i];
            }
            break;
        case B_MIN:
            SIMD for (int i = 0; i < n; i++) {
                const float pa = a[i] < b[i] ? 1.0f : (a[i] == b[i] ? 0.5f : 0.0f);
                out[i] += w * (a[i] <= b[i] ? a[i] : b[i]);
                dout[i] += w * pa * da[i] + w * (1.0f - pa) * db[i];
            }
            break;
        case B_SIG_MUL:
            SIMD for (int i = 0; i < n; i++) {
                const float s = 1.0f / (1.0f + expf(-a[i]));
                out[i] += w * (s * b[i]);
                dout[i] += w * ((1.0f - s) * s) * b[i] * da[i] + w * s * db[i];
            }
            break;
        }
    }
}

/* Per-thread scratch for one block. */
typedef struct {
    Input xin, b0in;
    float m0[BLOCK], m1[BLOCK], m3[BLOCK], b0[BLOCK], m2[BLOCK];
    float d0[BLOCK], d1[BLOCK], d3[BLOCK], d2[BLOCK];
    float g0[BLOCK], g1[BLOCK], g2[BLOCK], g3[BLOCK], gb0[BLOCK], db0[BLOCK], dm2[BLOCK];
    float xvalue[ROWS][BLOCK], b0value[ROWS][BLOCK], xdvalue[ROWS][BLOCK], b0dvalue[ROWS][BLOCK];
    Group xgroup, u2group;
    Linear linear[2]; /* the folded linear ops of b0 and b1, worked out once per call */
} Workspace;

static void workspace_init(Workspace *ws) {
    Group x = {{0, 1, 4}, 3, {ws->m0, ws->m1, ws->m3}, {ws->d0, ws->d1, ws->d3}, ws->xvalue, ws->xdvalue};
    Group u2 = {{3, 3, 3}, 1, {ws->m2, NULL, NULL}, {ws->d2, NULL, NULL}, ws->b0value, ws->b0dvalue};
    ws->xgroup = x;
    ws->u2group = u2;
}

/* Slot outputs u0, u1, u3, b0, u2 of one block (and, with derivative, what the backward needs). */
static void block_hidden(const Cell *cell, Workspace *ws, const float *x, int n, int derivative) {
    input_init(&ws->xin, x, n);
    group_forward(cell, &ws->xgroup, &ws->xin, derivative);
    binary_forward(cell, 2, &ws->linear[0], ws->m0, ws->m1, n, ws->b0);
    input_init(&ws->b0in, ws->b0, n);
    group_forward(cell, &ws->u2group, &ws->b0in, derivative);
}

typedef struct {
    const Cell *cell;
    const float *x, *gy;
    float *y, *gx;
    int64_t begin, end;
    int failed;
    double gw[MAX_CANDIDATES], gbeta[MAX_CANDIDATES];
} Task;

/* Each thread's scratch, allocated on its first call and kept: the OpenMP threads persist, and a
 * fresh allocation per call would page-fault its way through the workspace every time. */
static _Thread_local Workspace *thread_workspace;

static Workspace *workspace(void) {
    if (!thread_workspace) {
        /* One huge page where the system grants it: the workspace's few hundred kilobytes then need
         * one TLB entry instead of a hundred, and lie contiguously in the caches. */
        const size_t huge = (size_t)1 << 21, size = (sizeof(Workspace) + huge - 1) / huge * huge;
        void *memory = aligned_alloc(huge, size);
        if (memory) {
#ifdef MADV_HUGEPAGE
            madvise(memory, size, MADV_HUGEPAGE);
#endif
            memset(memory, 0, sizeof(Workspace));
            thread_workspace = memory;
            workspace_init(thread_workspace);
        }
    }
    return thread_workspace;
}

/* This thread's workspace, scheduled for the call's cell (NULL when memory ran out). */
static Workspace *scheduled_workspace(const Cell *cell) {
    Workspace *ws = workspace();
    if (ws) {
        group_schedule(cell, &ws->xgroup);
        group_schedule(cell, &ws->u2group);
        ws->linear[0] = binary_linear(cell, 2);
        ws->linear[1] = binary_linear(cell, 5);
    }
    return ws;
}

/* Asks the memory system for the next block's input and output while this block computes: the
 * tensors are far larger than the caches, and a block's many passes over its workspace in between
 * lose the hardware prefetcher's track of them. */
static inline void prefetch_block(const float *read0, const float *read1, float *write, int64_t start, int64_t end) {
    const int64_t stop = start + BLOCK < end ? start + BLOCK : end;
    for (int64_t i = start; i < stop; i += 64 / sizeof(float)) {
        __builtin_prefetch(read0 + i, 0, 3);
        if (read1) __builtin_prefetch(read1 + i, 0, 3);
        __builtin_prefetch(write + i, 1, 3);
    }
}

static void forward_task(Task *t) {
    Workspace *ws = scheduled_workspace(t->cell);
    if (!ws) {
        t->failed = 1;
        return;
    }
    for (int64_t start = t->begin; start < t->end; start += BLOCK) {
        const int n = (int)(t->end - start < BLOCK ? t->end - start : BLOCK);
        prefetch_block(t->x, NULL, t->y, start + BLOCK, t->end);
        block_hidden(t->cell, ws, t->x + start, n, 0);
        binary_forward(t->cell, 5, &ws->linear[1], ws->m2, ws->m3, n, t->y + start);
    }
}

static void backward_task(Task *t) {
    const Cell *cell = t->cell;
    Workspace *ws = scheduled_workspace(t->cell);
    if (!ws) {
        t->failed = 1;
        return;
    }
    for (int64_t start = t->begin; start < t->end; start += BLOCK) {
        const int n = (int)(t->end - start < BLOCK ? t->end - start : BLOCK);
        float *gx = t->gx + start;
        prefetch_block(t->x, t->gy, t->gx, start + BLOCK, t->end);
        block_hidden(cell, ws, t->x + start, n, 1);
        binary_backward(cell, 5, &ws->linear[1], ws->m2, ws->m3, n, t->gy + start, ws->g2, ws->g3, t->gw, t->gbeta);
        float *u2grad[1] = {ws->g2};
        memset(ws->gb0, 0, sizeof(float) * n);
        group_backward(cell, &ws->u2group, &ws->b0in, u2grad, ws->gb0, t->gw, t->gbeta);
        binary_backward(cell, 2, &ws->linear[0], ws->m0, ws->m1, n, ws->gb0, ws->g0, ws->g1, t->gw, t->gbeta);
        float *xgrad[3] = {ws->g0, ws->g1, ws->g3};
        memset(gx, 0, sizeof(float) * n);
        group_backward(cell, &ws->xgroup, &ws->xin, xgrad, gx, t->gw, t->gbeta);
    }
}

/* y = f(x) and gx = f'(x) in one forward-mode pass: each slot's output carries its derivative by x. */
static void tangent_task(Task *t) {
    const Cell *cell = t->cell;
    Workspace *ws = scheduled_workspace(t->cell);
    if (!ws) {
        t->failed = 1;
        return;
    }
    for (int64_t start = t->begin; start < t->end; start += BLOCK) {
        const int n = (int)(t->end - start < BLOCK ? t->end - start : BLOCK);
        input_init(&ws->xin, t->x + start, n);
        group_forward(cell, &ws->xgroup, &ws->xin, 1);
        binary_tangent(cell, 2, &ws->linear[0], ws->m0, ws->d0, ws->m1, ws->d1, n, ws->b0, ws->db0);
        input_init(&ws->b0in, ws->b0, n);
        group_forward(cell, &ws->u2group, &ws->b0in, 1);
        SIMD for (int i = 0; i < n; i++) ws->dm2[i] = ws->d2[i] * ws->db0[i];
        binary_tangent(cell, 5, &ws->linear[1], ws->m2, ws->dm2, ws->m3, ws->d3, n, t->y + start, t->gx + start);
    }
}

/*
 * Split [0, n) into block-aligned ranges, one per thread, and run them; returns the tasks used.
 * The threads are OpenMP's: loaded into a PyTorch process, this library binds to the libgomp
 * PyTorch already loaded, so the kernel shares PyTorch's warm thread pool instead of starting
 * threads per call (which, on a busy machine, queue behind every other process). A thread gets
 * at least GRAIN elements, as in PyTorch's elementwise operations; smaller tensors run on one.
 */
static int run_tasks(Task *tasks, int threads, int64_t n, void (*body)(Task *)) {
    const int64_t blocks = (n + BLOCK - 1) / BLOCK, grains = (n + GRAIN - 1) / GRAIN;
    if (threads > grains) threads = (int)(grains > 0 ? grains : 1);
    for (int i = 0; i < threads; i++) {
        tasks[i].begin = blocks * i / threads * BLOCK;
        tasks[i].end = blocks * (i + 1) / threads * BLOCK;
        if (tasks[i].end > n) tasks[i].end = n;
    }
#pragma omp parallel for num_threads(threads) schedule(static, 1) if (threads > 1)
    for (int i = 0; i < threads; i++) body(&tasks[i]);
    return threads;
}

static void init_tasks(Task *tasks, int threads, const Cell *cell, const float *x, const float *gy, float *y,
                       float *gx) {
    for (int i = 0; i < threads; i++) {
        tasks[i].cell = cell;
        tasks[i].x = x;
        tasks[i].gy = gy;
        tasks[i].y = y;
        tasks[i].gx = gx;
        tasks[i].failed = 0;
        memset(tasks[i].gw, 0, sizeof(tasks[i].gw));
        memset(tasks[i].gbeta, 0, sizeof(tasks[i].gbeta));
    }
}

static int valid(const int32_t *offset, int threads) {
    for (int s = 0; s < SLOTS; s++) {
        const int count = offset[s + 1] - offset[s];
        if (count < 1 || count > MAX_UNARY) return 0;
    }
    return offset[SLOTS] <= MAX_CANDIDATES && threads >= 1;
}

static int clamp_threads(int threads) { return threads > MAX_THREADS ? MAX_THREADS : threads; }

/* Returns 0 on success, -1 on a bad layout, -2 when memory ran out. */
int grafs_cell_forward(const float *x, float *y, int64_t n, const int32_t *code, const int32_t *active,
                       const float *w, const float *beta, const int32_t *offset, int bounded, int edges,
                       int threads) {
    if (!valid(offset, threads)) return -1;
    Cell cell = {code, active, w, beta, offset, bounded, edges, 0};
    Task *tasks = malloc(sizeof(Task) * MAX_THREADS);
    if (!tasks) return -2;
    threads = clamp_threads(threads);
    init_tasks(tasks, threads, &cell, x, NULL, y, NULL);
    const int used = run_tasks(tasks, threads, n, forward_task);
    int status = 0;
    for (int i = 0; i < used; i++) status |= tasks[i].failed;
    free(tasks);
    return status ? -2 : 0;
}

/* The backward pass of every block, on the threads, given gy = d loss / dy: gx is overwritten, and gw
 * and gbeta (offset[6] entries each) receive the summed weight and beta gradients. */
int grafs_cell_backward(const float *x, const float *gy, float *gx, int64_t n, const int32_t *code,
                        const int32_t *active, const float *w, const float *beta, const int32_t *offset, int bounded,
                        int edges, int threads, double *gw, double *gbeta) {
    if (!valid(offset, threads)) return -1;
    Cell cell = {code, active, w, beta, offset, bounded, edges, 1};
    Task *tasks = malloc(sizeof(Task) * MAX_THREADS);
    if (!tasks) return -2;
    threads = clamp_threads(threads);
    init_tasks(tasks, threads, &cell, x, gy, NULL, gx);
    const int used = run_tasks(tasks, threads, n, backward_task);
    int status = 0;
    for (int k = 0; k < offset[SLOTS]; k++) {
        gw[k] = 0.0;
        gbeta[k] = 0.0;
    }
    for (int i = 0; i < used; i++) {
        status |= tasks[i].failed;
        for (int k = 0; k < offset[SLOTS]; k++) {
            gw[k] += tasks[i].gw[k];
            gbeta[k] += tasks[i].gbeta[k];
        }
    }
    free(tasks);
    return status ? -2 : 0;
}

/* y = f(x) and dydx = f'(x) in one pass, for callers whose weights and betas need no gradient. */
int grafs_cell_forward_derivative(const float *x, float *y, float *dydx, int64_t n, const int32_t *code,
                                  const int32_t *active, const float *w, const float *beta, const int32_t *offset,
                                  int bounded, int edges, int threads) {
    if (!valid(offset, threads)) return -1;
    Cell cell = {code, active, w, beta, offset, bounded, edges, 0};
    Task *tasks = malloc(sizeof(Task) * MAX_THREADS);
    if (!tasks) return -2;
    threads = clamp_threads(threads);
    init_tasks(tasks, threads, &cell, x, NULL, y, dydx);
    const int used = run_tasks(tasks, threads, n, tangent_task);
    int status = 0;
    for (int i = 0; i < used; i++) status |= tasks[i].failed;
    free(tasks);
    return status ? -2 : 0;
}
