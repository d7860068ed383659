/* orderbook._cside: the book's hot path in C, with orderbook.book as its reference.
 *
 * plan(raw, levels, keys, sizes, descending) plans the replacement of one held side
 * (the parallel best-first lists of orderbook.book._Side) by the side's raw JSON array,
 * exactly as orderbook.book's pure-Python path would, and returns:
 *
 *   None                               when it does not decide (the Python path does);
 *   ()                                 when the held side already equals the input;
 *   (levels, keys, sizes, changes)     the new lists and the changes, best first.
 *
 * It decides only the common case it can prove equal to the Python path:
 * - an array of objects whose members are "price", "size" (each once) and other members
 *   with a string (no escapes), number or literal value;
 * - prices and sizes as JSON numbers or numeric strings, plain decimals
 *   DIGITS[.DIGITS] with at most 18 decimal places and 30 digits (a bare JSON number
 *   without a fraction: at most 18 digits), every price in (0, 1], no size 0;
 * - strictly best first (bids descending, asks ascending), at most MAX_LEVELS levels;
 * - a held side of at most MAX_LEVELS levels with int keys and ASCII texts.
 * Anything else (an escape, a nested value, a duplicate member, an exponent, a sign,
 * a size 0, another order, an invalid number ...) returns None before any object is
 * made, and the Python path gives the answer (or raises InvalidLevel).
 *
 * The held lists are borrowed: orderbook.book never changes them in place (a plan makes
 * new lists), so their items stay valid while this allocates.
 *
 * Keys are the number times 10**18 (price: int64, size: unsigned 128-bit), the same
 * integers orderbook.book uses. A held level keeps its price text and, when the size
 * did not change in value (100 and 100.0), its size text. No state, no I/O.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_LEVELS 256
#define SCALE_PLACES 18
#define MAX_DIGITS 30
#define MAX_WHOLE 20
#define MAX_BARE_INT 18

typedef unsigned __int128 u128;

static const uint64_t POW10[SCALE_PLACES + 1] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
    100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
    10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL};
#define ONE_KEY 1000000000000000000LL

typedef struct {
    const char *p;
    Py_ssize_t pn;
    const char *s;
    Py_ssize_t sn;
    int64_t pkey;
    u128 skey;
} Lvl;

static PyObject *ZERO_TEXT; /* "0": the size of a removed level */
static PyObject *UNCHANGED; /* () */

/* key = value * 10**18 of plain decimal text t[0:n]; 1 on success, 0: not decided here.
 * bare: a JSON number (no leading zero; without a fraction at most MAX_BARE_INT digits,
 * so msgspec gave the Python path an int below 10**18). */
static int
plain_key(const char *t, Py_ssize_t n, int bare, u128 *key)
{
    Py_ssize_t i = 0, f = 0;
    u128 v = 0;
    while (i < n && t[i] >= '0' && t[i] <= '9') {
        if (i >= MAX_WHOLE)
            return 0;
        v = v * 10 + (unsigned)(t[i] - '0');
        i++;
    }
    Py_ssize_t w = i;
    if (w == 0 || (bare && w > 1 && t[0] == '0'))
        return 0;
    if (i < n) {
        if (t[i] != '.')
            return 0;
        i++;
        Py_ssize_t start = i;
        while (i < n && t[i] >= '0' && t[i] <= '9') {
            if (i - start >= SCALE_PLACES)
                return 0;
            v = v * 10 + (unsigned)(t[i] - '0');
            i++;
        }
        f = i - start;
        if (f == 0 || i != n)
            return 0;
    }
    else if (bare && w > MAX_BARE_INT) {
        return 0;
    }
    if (w + f > MAX_DIGITS)
        return 0;
    *key = v * (u128)POW10[SCALE_PLACES - f];
    return 1;
}

static inline const char *
skip_ws(const char *c, const char *end)
{
    while (c < end && (*c == ' ' || *c == '\n' || *c == '\r' || *c == '\t'))
        c++;
    return c;
}

/* A string token at c ('"'): its content span; NULL for an escape, a control character
 * (invalid JSON, which msgspec refuses) or no end. */
static inline const char *
string_token(const char *c, const char *end, const char **s, Py_ssize_t *n)
{
    const char *q = c + 1; /* one pass: the strings here are short ("side", "BUY") */
    for (; q < end && *q != '"'; q++)
        if (*q == '\\' || (unsigned char)*q < 0x20)
            return NULL;
    if (q >= end)
        return NULL;
    *s = c + 1;
    *n = q - c - 1;
    return q + 1;
}

static inline const char *
digits(const char *c, const char *end)
{
    while (c < end && *c >= '0' && *c <= '9')
        c++;
    return c;
}

/* A price or size value at c: a number or a string; its text span and whether bare. */
static inline const char *
number_value(const char *c, const char *end, const char **s, Py_ssize_t *n, int *bare)
{
    if (c >= end)
        return NULL;
    if (*c == '"') {
        *bare = 0;
        return string_token(c, end, s, n);
    }
    const char *d = c;
    while (d < end && ((*d >= '0' && *d <= '9') || *d == '.'))
        d++;
    *bare = 1;
    *s = c;
    *n = d - c;
    return d;
}

/* Skip another member's value: a string, a number or a literal; NULL for anything else. */
static inline const char *
skip_value(const char *c, const char *end)
{
    if (c >= end)
        return NULL;
    if (*c == '"') {
        const char *s;
        Py_ssize_t n;
        return string_token(c, end, &s, &n);
    }
    /* a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
    if ((*c >= '0' && *c <= '9') || *c == '-') {
        if (*c == '-' && ++c >= end)
            return NULL;
        if (*c == '0')
            c++;
        else if (*c >= '1' && *c <= '9')
            c = digits(c, end);
        else
            return NULL;
        if (c < end && *c == '.') {
            const char *d = digits(c + 1, end);
            if (d == c + 1)
                return NULL;
            c = d;
        }
        if (c < end && (*c == 'e' || *c == 'E')) {
            c++;
            if (c < end && (*c == '+' || *c == '-'))
                c++;
            const char *d = digits(c, end);
            if (d == c)
                return NULL;
            c = d;
        }
        return c;
    }
    if (end - c >= 4 && (memcmp(c, "true", 4) == 0 || memcmp(c, "null", 4) == 0))
        return c + 4;
    if (end - c >= 5 && memcmp(c, "false", 5) == 0)
        return c + 5;
    return NULL;
}

/* Parse the side into lv; the number of levels, or -1: not decided here. */
static Py_ssize_t
parse_side(const char *c, const char *end, Lvl *lv, int descending)
{
    Py_ssize_t m = 0;
    c = skip_ws(c, end);
    if (c >= end || *c != '[')
        return -1;
    c = skip_ws(c + 1, end);
    if (c < end && *c == ']')
        return skip_ws(c + 1, end) == end ? 0 : -1;
    for (;;) {
        if (m >= MAX_LEVELS || c >= end || *c != '{')
            return -1;
        Lvl *l = &lv[m];
        int have_p = 0, have_s = 0, bare_p = 0, bare_s = 0;
        c = skip_ws(c + 1, end);
        for (;;) {
            const char *k;
            Py_ssize_t kn;
            if (c >= end || *c != '"' || (c = string_token(c, end, &k, &kn)) == NULL)
                return -1;
            c = skip_ws(c, end);
            if (c >= end || *c != ':')
                return -1;
            c = skip_ws(c + 1, end);
            if (kn == 5 && memcmp(k, "price", 5) == 0) {
                if (have_p)
                    return -1;
                have_p = 1;
                c = number_value(c, end, &l->p, &l->pn, &bare_p);
            }
            else if (kn == 4 && memcmp(k, "size", 4) == 0) {
                if (have_s)
                    return -1;
                have_s = 1;
                c = number_value(c, end, &l->s, &l->sn, &bare_s);
            }
            else {
                c = skip_value(c, end);
            }
            if (c == NULL)
                return -1;
            c = skip_ws(c, end);
            if (c < end && *c == ',') {
                c = skip_ws(c + 1, end);
                continue;
            }
            if (c < end && *c == '}')
                break;
            return -1;
        }
        if (!have_p || !have_s)
            return -1;
        u128 pkey, skey;
        if (!plain_key(l->p, l->pn, bare_p, &pkey) || pkey == 0 || pkey > (u128)ONE_KEY)
            return -1;
        if (!plain_key(l->s, l->sn, bare_s, &skey) || skey == 0)
            return -1;
        l->pkey = (int64_t)pkey;
        l->skey = skey;
        if (m > 0 && (descending ? l->pkey >= lv[m - 1].pkey : l->pkey <= lv[m - 1].pkey))
            return -1;
        m++;
        c = skip_ws(c + 1, end);
        if (c < end && *c == ',') {
            c = skip_ws(c + 1, end);
            continue;
        }
        if (c < end && *c == ']')
            return skip_ws(c + 1, end) == end ? m : -1;
        return -1;
    }
}

static inline int
ascii_text(PyObject *o)
{
    return PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o);
}

static inline int
same_text(PyObject *held, const char *s, Py_ssize_t n)
{
    return PyUnicode_GET_LENGTH(held) == n && memcmp(PyUnicode_DATA(held), s, (size_t)n) == 0;
}

/* op(a, b), releasing both operands; NULL when either is NULL (its error is set). */
static PyObject *
binary_steal(binaryfunc op, PyObject *a, PyObject *b)
{
    PyObject *out = a != NULL && b != NULL ? op(a, b) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    return out;
}

static PyObject *
size_key_object(u128 v)
{
    if (v <= (u128)UINT64_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
    PyObject *high = binary_steal(PyNumber_Lshift,
                                  PyLong_FromUnsignedLongLong((unsigned long long)(v >> 64)),
                                  PyLong_FromLong(64));
    if (high == NULL)
        return NULL;
    return binary_steal(PyNumber_Or, high, PyLong_FromUnsignedLongLong((unsigned long long)v));
}

static PyObject *
pair(PyObject *a, PyObject *b) /* steals b, borrows a */
{
    if (b == NULL)
        return NULL;
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    Py_INCREF(a);
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

static PyObject *
text(const char *s, Py_ssize_t n)
{
    return PyUnicode_FromStringAndSize(s, n);
}

/* Append (price, "0") for a held level that is gone. */
static int
append_removed(PyObject *changes, PyObject *held)
{
    Py_INCREF(ZERO_TEXT);
    PyObject *removed = pair(PyTuple_GET_ITEM(held, 0), ZERO_TEXT);
    if (removed == NULL)
        return -1;
    int r = PyList_Append(changes, removed);
    Py_DECREF(removed);
    return r;
}

static PyObject *
plan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "plan(raw, levels, keys, sizes, descending)");
        return NULL;
    }
    PyObject *levels = args[1], *keys = args[2], *sizes = args[3];
    int descending = PyObject_IsTrue(args[4]);
    if (descending < 0)
        return NULL;
    if (!PyList_CheckExact(levels) || !PyList_CheckExact(keys) || !PyList_CheckExact(sizes))
        Py_RETURN_NONE;
    Py_ssize_t h = PyList_GET_SIZE(levels);
    if (h > MAX_LEVELS || PyList_GET_SIZE(keys) != h || PyList_GET_SIZE(sizes) != h)
        Py_RETURN_NONE;

    /* The held side: int keys (int64), ASCII texts. */
    int64_t hk[MAX_LEVELS];
    for (Py_ssize_t i = 0; i < h; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i), *lvl = PyList_GET_ITEM(levels, i);
        if (!PyLong_CheckExact(key) || !PyLong_CheckExact(PyList_GET_ITEM(sizes, i)) ||
            !PyTuple_CheckExact(lvl) || PyTuple_GET_SIZE(lvl) != 2 ||
            !ascii_text(PyTuple_GET_ITEM(lvl, 0)) || !ascii_text(PyTuple_GET_ITEM(lvl, 1)))
            Py_RETURN_NONE;
        int overflow = 0;
        hk[i] = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (overflow || (hk[i] == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    }

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Lvl lv[MAX_LEVELS];
    const char *start = (const char *)view.buf;
    Py_ssize_t m = parse_side(start, start + view.len, lv, descending);
    if (m < 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }

    /* Unchanged: the same prices in the same places with the same size texts. */
    if (m == h) {
        Py_ssize_t j = 0;
        while (j < m && lv[j].pkey == hk[j] &&
               same_text(PyTuple_GET_ITEM(PyList_GET_ITEM(levels, j), 1), lv[j].s, lv[j].sn))
            j++;
        if (j == m) {
            PyBuffer_Release(&view);
            Py_INCREF(UNCHANGED);
            return UNCHANGED;
        }
    }

    /* Each new object goes into its slot at once: on an error the lists' dealloc frees what
     * is set (slots not set yet hold NULL, which it skips). */
    PyObject *result = NULL;
    PyObject *out_levels = PyList_New(m), *out_keys = PyList_New(m);
    PyObject *out_sizes = PyList_New(m), *changes = PyList_New(0);
    if (out_levels == NULL || out_keys == NULL || out_sizes == NULL || changes == NULL)
        goto done;
    Py_ssize_t i = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        Lvl *l = &lv[j];
        while (i < h && (descending ? hk[i] > l->pkey : hk[i] < l->pkey)) {
            /* better than any new level: gone */
            if (append_removed(changes, PyList_GET_ITEM(levels, i)) < 0)
                goto done;
            i++;
        }
        PyObject *level, *key, *size;
        if (i < h && hk[i] == l->pkey) {
            PyObject *held = PyList_GET_ITEM(levels, i), *held_size = PyList_GET_ITEM(sizes, i);
            key = PyList_GET_ITEM(keys, i);
            Py_INCREF(key);
            PyList_SET_ITEM(out_keys, j, key);
            int same = same_text(PyTuple_GET_ITEM(held, 1), l->s, l->sn);
            size = NULL;
            if (!same) {
                if ((size = size_key_object(l->skey)) == NULL)
                    goto done;
                same = PyObject_RichCompareBool(size, held_size, Py_EQ);
                if (same != 0) /* the same value spelled another way (or an error) */
                    Py_DECREF(size);
                if (same < 0)
                    goto done;
            }
            if (same) { /* the held level stays, with its texts */
                Py_INCREF(held_size);
                PyList_SET_ITEM(out_sizes, j, held_size);
                Py_INCREF(held);
                PyList_SET_ITEM(out_levels, j, held);
            }
            else {
                PyList_SET_ITEM(out_sizes, j, size);
                if ((level = pair(PyTuple_GET_ITEM(held, 0), text(l->s, l->sn))) == NULL)
                    goto done;
                PyList_SET_ITEM(out_levels, j, level);
                if (PyList_Append(changes, level) < 0)
                    goto done;
            }
            i++;
        }
        else {
            PyObject *ptext = text(l->p, l->pn);
            if (ptext == NULL)
                goto done;
            level = pair(ptext, text(l->s, l->sn));
            Py_DECREF(ptext);
            if (level == NULL)
                goto done;
            PyList_SET_ITEM(out_levels, j, level);
            if (PyList_Append(changes, level) < 0 ||
                (key = PyLong_FromLongLong(l->pkey)) == NULL)
                goto done;
            PyList_SET_ITEM(out_keys, j, key);
            if ((size = size_key_object(l->skey)) == NULL)
                goto done;
            PyList_SET_ITEM(out_sizes, j, size);
        }
    }
    for (; i < h; i++)
        if (append_removed(changes, PyList_GET_ITEM(levels, i)) < 0)
            goto done;
    if (PyList_GET_SIZE(changes) == 0) { /* only spellings changed */
        result = UNCHANGED;
        Py_INCREF(result);
    }
    else {
        result = PyTuple_Pack(4, out_levels, out_keys, out_sizes, changes);
    }

done:
    PyBuffer_Release(&view);
    Py_XDECREF(out_levels);
    Py_XDECREF(out_keys);
    Py_XDECREF(out_sizes);
    Py_XDECREF(changes);
    return result;
}

static PyMethodDef methods[] = {
    {"plan", (PyCFunction)(void (*)(void))plan, METH_FASTCALL,
     "plan(raw, levels, keys, sizes, descending) -> None | () | (levels, keys, sizes, changes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "orderbook._cside",
    .m_doc = "The book's hot path in C (orderbook.book is the reference; see the source).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__cside(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    ZERO_TEXT = PyUnicode_InternFromString("0");
    UNCHANGED = PyTuple_New(0);
    if (ZERO_TEXT == NULL || UNCHANGED == NULL ||
        PyModule_AddIntConstant(m, "MAX_LEVELS", MAX_LEVELS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
