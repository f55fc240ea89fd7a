/* Optional compiled request-path kernels of guarded-serving (the package falls back to NumPy without them).
 *
 * Served, every guarded call runs with cold caches: the framework parsed, routed and serialised other
 * requests since the previous call and the model ran in between. The edge-case verdict of a one-row
 * call in NumPy is about a dozen small calls (tail-table read, Mahalanobis product, two null lookups,
 * the conformal rank), each paying NumPy's dispatch cold: 40-80 us per call measured, against a few
 * microseconds of arithmetic. These kernels do the same arithmetic in one call each:
 *
 *   all_within(x, low, high) -> bool   every value of x (float64, any shape) inside [low_j, high_j]
 *                                      (per column); NaN is outside, as NumPy's comparisons say
 *   EdgeKernel(arrays)(x) -> float     the conformal p-value of a one-row float64 input under the default
 *                                      tail + Mahalanobis detector (guarded_serving.edge_cases.combined),
 *                                      or -1.0 when the row needs the exact path (a value out of the tail
 *                                      table's range, missing, or a non-finite distance); rows of at most
 *                                      MAX_FEATURES (128) values, beyond which BLAS does the product better
 *   sr_mixture(f, lift, pi, G, ...)    the drift thread's conformal test martingale
 *                                      (guarded_serving.drift.sequential): its Shiryaev-Roberts brackets row by
 *                                      row in linear space with a per-column scale, one multiply-add per row,
 *                                      column and bet, where NumPy in log space makes a dozen passes over
 *                                      (rows, columns, bets) temporaries with an exp and a log in most
 *
 * Inputs are read through the buffer protocol (no NumPy headers at build time). The tail sum follows
 * NumPy's pairwise summation of a contiguous float64 vector (eight accumulators up to 128 values), so the
 * tail score is bit-identical to ``np.add.reduce``; the Mahalanobis product is a plain loop, whose
 * rounding may differ from BLAS in the last bit (a p-value changes only at an exact tie with a
 * calibration score).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* -- buffers ----------------------------------------------------------------------------------- */

static int
format_is(const char *fmt, const char *codes)
{
    /* a one-item struct format, native or little-endian byte order, whose code is one of `codes` */
    if (fmt == NULL) return 0;  /* every request here asks for the format */
    if (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@') fmt++;
    return fmt[0] != '\0' && fmt[1] == '\0' && strchr(codes, fmt[0]) != NULL;
}

/* A read-only, strided view of a float64 buffer (TypeError for any other item type). */
static int
get_doubles(PyObject *obj, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    if (!format_is(view->format, "d") || view->itemsize != 8) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s must be float64", what);
        return -1;
    }
    return 0;
}

/* -- all_within -------------------------------------------------------------------------------- */

static PyObject *
all_within(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "all_within(x, low, high) takes 3 arguments");
        return NULL;
    }
    Py_buffer x, lo, hi;
    if (get_doubles(args[0], &x, "x") < 0) return NULL;
    if (get_doubles(args[1], &lo, "low") < 0) { PyBuffer_Release(&x); return NULL; }
    if (get_doubles(args[2], &hi, "high") < 0) { PyBuffer_Release(&x); PyBuffer_Release(&lo); return NULL; }
    PyObject *result = NULL;
    Py_ssize_t n = lo.len / 8;
    if (hi.len / 8 != n || lo.ndim != 1 || hi.ndim != 1 || !PyBuffer_IsContiguous(&lo, 'C')
            || !PyBuffer_IsContiguous(&hi, 'C') || x.ndim < 1 || x.ndim > 2 || x.shape[x.ndim - 1] != n) {
        PyErr_SetString(PyExc_ValueError, "all_within: x must have low's and high's length as its last dimension");
        goto done;
    }
    const double *l = (const double *)lo.buf, *h = (const double *)hi.buf;
    Py_ssize_t rows = x.ndim == 2 ? x.shape[0] : 1;
    Py_ssize_t rs = x.ndim == 2 ? x.strides[0] : 0, cs = x.strides[x.ndim - 1];
    int ok = 1;
    for (Py_ssize_t i = 0; i < rows && ok; i++) {
        const char *row = (const char *)x.buf + i * rs;
        for (Py_ssize_t j = 0; j < n; j++) {
            double v = *(const double *)(row + j * cs);
            if (!(v >= l[j] && v <= h[j])) { ok = 0; break; }
        }
    }
    result = PyBool_FromLong(ok);
done:
    PyBuffer_Release(&x);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    return result;
}

/* -- the edge-case kernel ---------------------------------------------------------------------- */

enum { A_SCALE, A_SHIFT, A_LOW, A_HIGH, A_TABLE, A_LOC, A_FACTOR,
       A_T_X, A_T_BX, A_T_BLP, A_T_BSL, A_M_X, A_M_BX, A_M_BLP, A_M_BSL, A_CAL, N_ARRAYS };

/* Widest row the kernel takes: beyond it the Mahalanobis product is better left to BLAS. */
#define MAX_FEATURES 128

typedef struct {
    PyObject_HEAD
    Py_buffer views[N_ARRAYS];
    int n_views;
    int ready;          /* set by a successful __init__ only */
    Py_ssize_t n;       /* features */
    Py_ssize_t table_len;
    Py_ssize_t t_knots, m_knots, n_cal;
} EdgeKernel;

static void
EdgeKernel_dealloc(EdgeKernel *self)
{
    for (int i = 0; i < self->n_views; i++) PyBuffer_Release(&self->views[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define D(k) ((const double *)self->views[k].buf)
#define LEN(k) (self->views[k].len / 8)

static int
EdgeKernel_init(EdgeKernel *self, PyObject *args, PyObject *kwds)
{
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "O:EdgeKernel", &seq)) return -1;
    PyObject *fast = PySequence_Fast(seq, "EdgeKernel expects a sequence of float64 arrays");
    if (fast == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != N_ARRAYS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "EdgeKernel expects %d arrays", N_ARRAYS);
        return -1;
    }
    self->ready = 0;
    for (int i = 0; i < self->n_views; i++) PyBuffer_Release(&self->views[i]);
    self->n_views = 0;
    for (int i = 0; i < N_ARRAYS; i++) {
        Py_buffer *v = &self->views[i];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, i), v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            Py_DECREF(fast);
            return -1;
        }
        self->n_views++;
        if (!format_is(v->format, "d") || v->itemsize != 8) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_TypeError, "EdgeKernel: array %d must be C-contiguous float64", i);
            return -1;
        }
    }
    Py_DECREF(fast);
    Py_ssize_t n = LEN(A_SCALE);
    self->n = n;
    self->table_len = LEN(A_TABLE);
    self->t_knots = LEN(A_T_X);
    self->m_knots = LEN(A_M_X);
    self->n_cal = LEN(A_CAL);
    if (n < 1 || n > MAX_FEATURES || LEN(A_SHIFT) != n || LEN(A_LOW) != n || LEN(A_HIGH) != n || LEN(A_LOC) != n
            || LEN(A_FACTOR) != n * n || self->t_knots < 1 || self->m_knots < 1
            || LEN(A_T_BX) != self->t_knots + 1 || LEN(A_T_BLP) != self->t_knots + 1
            || LEN(A_T_BSL) != self->t_knots + 1 || LEN(A_M_BX) != self->m_knots + 1
            || LEN(A_M_BLP) != self->m_knots + 1 || LEN(A_M_BSL) != self->m_knots + 1 || self->n_cal < 1) {
        PyErr_SetString(PyExc_ValueError, "EdgeKernel: inconsistent array lengths");
        return -1;
    }
    /* every index the tail can produce (low_j .. high_j) must lie in the table */
    const double *low = D(A_LOW), *high = D(A_HIGH);
    for (Py_ssize_t j = 0; j < n; j++) {
        if (!(low[j] >= 0.0 && high[j] < (double)self->table_len && low[j] <= high[j])) {
            PyErr_SetString(PyExc_ValueError, "EdgeKernel: tail sentinels outside the table");
            return -1;
        }
    }
    self->ready = 1;
    return 0;
}

/* NumPy's pairwise sum of a contiguous float64 vector of at most 128 values (pairwise_sum_DOUBLE,
 * below its block size: eight accumulators, combined pairwise, then the remainder). */
static double
numpy_sum(const double *a, Py_ssize_t n)
{
    if (n < 8) {
        double res = 0.0;  /* -0.0 in NumPy; the same for any sum that is not all negative zeros */
        for (Py_ssize_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    double r[8];
    for (int k = 0; k < 8; k++) r[k] = a[k];
    Py_ssize_t i;
    for (i = 8; i < n - (n % 8); i += 8) {
        for (int k = 0; k < 8; k++) r[k] += a[i + k];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
}

/* ``-log P_null(S >= s)`` (NullTail.evidence_one): segment j = bisect_right(x, s). */
static double
evidence(double s, const double *x, Py_ssize_t m, const double *bx, const double *blp, const double *bsl)
{
    Py_ssize_t lo = 0, hi = m;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (s < x[mid]) hi = mid; else lo = mid + 1;
    }
    return -((s - bx[lo]) * bsl[lo] + blp[lo]);
}

static PyObject *
EdgeKernel_call(EdgeKernel *self, PyObject *args, PyObject *kwds)
{
    PyObject *obj;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "EdgeKernel is not initialised");
        return NULL;
    }
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "EdgeKernel takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "EdgeKernel", 1, 1, &obj)) return NULL;
    Py_buffer xv;
    if (get_doubles(obj, &xv, "x") < 0) return NULL;
    Py_ssize_t n = self->n;
    if (xv.suboffsets != NULL
            || !((xv.ndim == 1 && xv.shape[0] == n) || (xv.ndim == 2 && xv.shape[0] == 1 && xv.shape[1] == n))) {
        PyBuffer_Release(&xv);
        PyErr_SetString(PyExc_ValueError, "EdgeKernel: x must be one row of the fitted width");
        return NULL;
    }
    Py_ssize_t cs = xv.strides[xv.ndim - 1];
    const char *xb = (const char *)xv.buf;
    double v[MAX_FEATURES], z[MAX_FEATURES];
    const double *scale = D(A_SCALE), *shift = D(A_SHIFT), *low = D(A_LOW), *high = D(A_HIGH);
    const double *table = D(A_TABLE), *loc = D(A_LOC), *F = D(A_FACTOR);
    /* tail: each value's table score (a NaN sentinel when out of range or missing), summed */
    for (Py_ssize_t j = 0; j < n; j++) {
        double u = *(const double *)(xb + j * cs) * scale[j] + shift[j];
        u = fmax(u, low[j]);   /* NaN -> the low sentinel, as np.fmax */
        u = u < high[j] ? u : high[j];
        v[j] = table[(Py_ssize_t)u];
    }
    double s = numpy_sum(v, n);
    double p = -1.0;
    if (s == s) {
        /* Mahalanobis: d = x - location, z = d @ factor, its squared norm */
        for (Py_ssize_t k = 0; k < n; k++) z[k] = 0.0;
        for (Py_ssize_t j = 0; j < n; j++) {
            double dj = *(const double *)(xb + j * cs) - loc[j];
            const double *row = F + j * n;
            for (Py_ssize_t k = 0; k < n; k++) z[k] += dj * row[k];
        }
        double d2 = 0.0;
        for (Py_ssize_t k = 0; k < n; k++) d2 += z[k] * z[k];
        if (d2 == d2 && !isinf(d2)) {
            double e1 = evidence(s, D(A_T_X), self->t_knots, D(A_T_BX), D(A_T_BLP), D(A_T_BSL));
            double e2 = evidence(d2, D(A_M_X), self->m_knots, D(A_M_BX), D(A_M_BLP), D(A_M_BSL));
            double best = e2 > e1 ? e2 : e1;
            /* bisect_left(calibration scores, best) */
            const double *cal = D(A_CAL);
            Py_ssize_t lo = 0, hi = self->n_cal;
            while (lo < hi) {
                Py_ssize_t mid = (lo + hi) / 2;
                if (cal[mid] < best) lo = mid + 1; else hi = mid;
            }
            p = ((double)self->n_cal - (double)lo + 1.0) / ((double)self->n_cal + 1.0);
        }
    }
    PyBuffer_Release(&xv);
    return PyFloat_FromDouble(p);
}

static PyTypeObject EdgeKernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "guarded_serving._native.EdgeKernel",
    .tp_basicsize = sizeof(EdgeKernel),
    .tp_dealloc = (destructor)EdgeKernel_dealloc,
    .tp_call = (ternaryfunc)EdgeKernel_call,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "EdgeKernel(arrays)(x) -> p-value of one row, or -1.0 for the exact path (see the module docstring).",
    .tp_init = (initproc)EdgeKernel_init,
    .tp_new = PyType_GenericNew,
};


/* -- sr_mixture: the conformal test martingale's Shiryaev-Roberts brackets, in linear space --------- */

/* A C-contiguous buffer of `nd` dimensions with the given shape (-1: any), float64 ('d') or int64 ('q').
 * A writable one when `writable`. */
static int
get_array(PyObject *obj, Py_buffer *view, const char *what, char kind, int nd, const Py_ssize_t *shape,
          int writable)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->itemsize != 8 || !format_is(view->format, kind == 'd' ? "d" : "ql")) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "sr_mixture: %s must be %s", what, kind == 'd' ? "float64" : "int64");
        return -1;
    }
    if (view->ndim != nd) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "sr_mixture: %s must have %d dimensions", what, nd);
        return -1;
    }
    for (int i = 0; i < nd; i++) {
        if (shape[i] >= 0 && view->shape[i] != shape[i]) {
            PyBuffer_Release(view);
            PyErr_Format(PyExc_ValueError, "sr_mixture: %s has a wrong shape (dimension %d)", what, i);
            return -1;
        }
    }
    return 0;
}

/* Brackets are kept within [1e-50, 1e50] times exp(S[c]), S[c] >= 0 (renormalised to a largest bracket of 1
 * when they leave it; S back to 0 when every bracket of the column is 0). The caller takes any factor above
 * e^100 out of the row (lift), so f * (R + pi) stays below 1e94, and exp(-S) <= 1 never overflows. */
#define SR_BIG 1e50
#define SR_SMALL 1e-50

/* sr_mixture(f, lift, pi, G, group, w, R, S, out) -> None
 *
 * For every row t, column c and betting function k (f: (n, c, k), the bets' factors divided by
 * exp(lift[t, c]), i.e. exp(log f - lift)):
 *     R[c, k] <- exp(lift[t, c]) * f[t, c, k] * (R[c, k] + pi[t, group[c, k]])   (a start at row t: mass pi)
 *     out[t, c] = log(sum_k w[c, k] * (R[c, k] + G[t, group[c, k]]))  (G: the mass of later starts)
 * the brackets R of column c held as R * exp(S[c]) (renormalised when they leave [1e-50, 1e50], S never
 * below 0, so no capital overflows). R and S are updated in place (S >= 0 on entry); pi, G: (n, groups). */
static PyObject *
sr_mixture(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "sr_mixture(f, lift, pi, G, group, w, R, S, out) takes 9 arguments");
        return NULL;
    }
    Py_buffer fv, lv, piv, gv, grv, wv, rv, sv, ov;
    Py_ssize_t any3[3] = {-1, -1, -1};
    if (get_array(args[0], &fv, "f", 'd', 3, any3, 0) < 0) return NULL;
    Py_ssize_t n = fv.shape[0], nc = fv.shape[1], nk = fv.shape[2];
    Py_ssize_t s_groups[2] = {n, -1}, s_ck[2] = {nc, nk}, s_c[1] = {nc}, s_out[2] = {n, nc};
    int got = 1;
    if (get_array(args[1], &lv, "lift", 'd', 2, s_out, 0) < 0) { got = 0; goto rel_f; }
    if (get_array(args[2], &piv, "pi", 'd', 2, s_groups, 0) < 0) { got = 0; goto rel_l; }
    s_groups[1] = piv.shape[1];
    if (get_array(args[3], &gv, "G", 'd', 2, s_groups, 0) < 0) { got = 0; goto rel_pi; }
    if (get_array(args[4], &grv, "group", 'q', 2, s_ck, 0) < 0) { got = 0; goto rel_g; }
    if (get_array(args[5], &wv, "w", 'd', 2, s_ck, 0) < 0) { got = 0; goto rel_gr; }
    if (get_array(args[6], &rv, "R", 'd', 2, s_ck, 1) < 0) { got = 0; goto rel_w; }
    if (get_array(args[7], &sv, "S", 'd', 1, s_c, 1) < 0) { got = 0; goto rel_r; }
    if (get_array(args[8], &ov, "out", 'd', 2, s_out, 1) < 0) { got = 0; goto rel_s; }
    {
        const double *f = (const double *)fv.buf, *pi = (const double *)piv.buf, *G = (const double *)gv.buf;
        const double *lift = (const double *)lv.buf;
        const long long *group = (const long long *)grv.buf;
        const double *w = (const double *)wv.buf;
        double *R = (double *)rv.buf, *S = (double *)sv.buf, *out = (double *)ov.buf;
        Py_ssize_t ng = piv.shape[1];
        for (Py_ssize_t i = 0; i < nc * nk; i++) {
            if (group[i] < 0 || group[i] >= ng) {
                PyErr_SetString(PyExc_ValueError, "sr_mixture: a group index is out of range");
                got = 0;
                goto rel_o;
            }
        }
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t t = 0; t < n; t++) {
            const double *pt = pi + t * ng, *gt = G + t * ng, *ft = f + t * nc * nk;
            for (Py_ssize_t c = 0; c < nc; c++) {
                double es = exp(-S[c]);
                double *Rc = R + c * nk;
                const double *fc = ft + c * nk, *wc = w + c * nk;
                const long long *gc = group + c * nk;
                double top = 0.0;
                for (Py_ssize_t k = 0; k < nk; k++) {
                    double r = fc[k] * (Rc[k] + pt[gc[k]] * es);
                    Rc[k] = r;
                    top = r > top ? r : top;
                }
                double up = lift[t * nc + c];
                if (up > 0.0) {                     /* the factor taken out of this row goes into the scale */
                    S[c] += up;
                    es = exp(-S[c]);
                }
                if (top == 0.0) {                   /* no bracket left: the scale means nothing */
                    S[c] = 0.0;
                    es = 1.0;
                } else if (top > SR_BIG) {                 /* the largest bracket back to 1 */
                    double m = 1.0 / top;
                    for (Py_ssize_t k = 0; k < nk; k++) Rc[k] *= m;
                    S[c] += log(top);
                    es = exp(-S[c]);
                } else if (top < SR_SMALL && top > 0.0 && S[c] > 0.0) {  /* back towards 1, S not below 0 */
                    double l = -log(top);
                    if (l > S[c]) l = S[c];
                    double m = exp(l);
                    for (Py_ssize_t k = 0; k < nk; k++) Rc[k] *= m;
                    S[c] -= l;
                    es = exp(-S[c]);
                }
                double acc = 0.0;
                for (Py_ssize_t k = 0; k < nk; k++) acc += wc[k] * (Rc[k] + gt[gc[k]] * es);
                out[t * nc + c] = log(acc) + S[c];
            }
        }
        Py_END_ALLOW_THREADS
    }
rel_o: PyBuffer_Release(&ov);
rel_s: PyBuffer_Release(&sv);
rel_r: PyBuffer_Release(&rv);
rel_w: PyBuffer_Release(&wv);
rel_gr: PyBuffer_Release(&grv);
rel_g: PyBuffer_Release(&gv);
rel_pi: PyBuffer_Release(&piv);
rel_l: PyBuffer_Release(&lv);
rel_f: PyBuffer_Release(&fv);
    if (!got) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"all_within", (PyCFunction)(void (*)(void))all_within, METH_FASTCALL,
     "all_within(x, low, high) -> bool: every value of x within [low_j, high_j] of its column (NaN is not)."},
    {"sr_mixture", (PyCFunction)(void (*)(void))sr_mixture, METH_FASTCALL,
     "sr_mixture(f, lift, pi, G, group, w, R, S, out) -> None: the drift martingale's brackets, row by row (see _native.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "guarded_serving._native",
    "Optional compiled request-path kernels (see _native.c); guarded_serving works without them.", -1, methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&EdgeKernelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "MAX_FEATURES", MAX_FEATURES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&EdgeKernelType);
    if (PyModule_AddObject(m, "EdgeKernel", (PyObject *)&EdgeKernelType) < 0) {
        Py_DECREF(&EdgeKernelType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
