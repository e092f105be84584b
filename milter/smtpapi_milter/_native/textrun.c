/* Scans of a mail-merged copy's text and bytes that Python can only do slowly; each has a
 * Python reference it is tested against.
 *
 * common_run: the length of the common prefix of two texts from given offsets
 * (merge_reuse._common_run_reference).
 *
 * A mail-merged copy is matched against the previous one by finding how far the two agree
 * from a point: in Python that takes slices (copies) of the new text, galloping then halving,
 * about 100 us of a merge copy's CPU (bench/milter_cpu.py). Here it is a compare in place:
 * memcmp over blocks while they agree, then byte by byte inside the block that differs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#define BLOCK 256

/* Common prefix of ``n`` units of ``size`` bytes at ``a`` and ``b``, in units. */
static Py_ssize_t common_units(const char *a, const char *b, Py_ssize_t n, int size) {
    Py_ssize_t done = 0;
    while (n - done >= BLOCK && memcmp(a + done * size, b + done * size, (size_t)BLOCK * size) == 0)
        done += BLOCK;
    const char *pa = a + done * size, *pb = b + done * size;
    Py_ssize_t left = n - done;
    Py_ssize_t k = 0;
    switch (size) {
    case 1:
        while (k < left && pa[k] == pb[k]) k++;
        break;
    case 2:
        while (k < left && ((const Py_UCS2 *)pa)[k] == ((const Py_UCS2 *)pb)[k]) k++;
        break;
    default:
        while (k < left && ((const Py_UCS4 *)pa)[k] == ((const Py_UCS4 *)pb)[k]) k++;
        break;
    }
    return done + k;
}

/* common_run(a, i, b, j): the length of the longest common prefix of a[i:] and b[j:] (two
 * str or two bytes; offsets past the end give 0, negative ones are an error). */
static PyObject *common_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "common_run(a, i, b, j)");
        return NULL;
    }
    PyObject *a = args[0], *b = args[2];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t j = PyLong_AsSsize_t(args[3]);
    if (j == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || j < 0) {
        PyErr_SetString(PyExc_ValueError, "offsets must not be negative");
        return NULL;
    }
    if (PyBytes_Check(a) && PyBytes_Check(b)) {
        Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b);
        if (i >= la || j >= lb) return PyLong_FromLong(0);
        Py_ssize_t n = la - i < lb - j ? la - i : lb - j;
        return PyLong_FromSsize_t(
            common_units(PyBytes_AS_STRING(a) + i, PyBytes_AS_STRING(b) + j, n, 1));
    }
    if (!PyUnicode_Check(a) || !PyUnicode_Check(b)) {
        PyErr_SetString(PyExc_TypeError, "two str or two bytes");
        return NULL;
    }
    Py_ssize_t la = PyUnicode_GET_LENGTH(a), lb = PyUnicode_GET_LENGTH(b);
    if (i >= la || j >= lb) return PyLong_FromLong(0);
    Py_ssize_t n = la - i < lb - j ? la - i : lb - j;
    int ka = PyUnicode_KIND(a), kb = PyUnicode_KIND(b);
    const void *da = PyUnicode_DATA(a), *db = PyUnicode_DATA(b);
    if (ka == kb)
        return PyLong_FromSsize_t(common_units((const char *)da + i * ka,
                                               (const char *)db + j * kb, n, ka));
    /* Different widths (one copy holds a wider character somewhere): by code point. */
    Py_ssize_t k = 0;
    while (k < n && PyUnicode_READ(ka, da, i + k) == PyUnicode_READ(kb, db, j + k)) k++;
    return PyLong_FromSsize_t(k);
}

/* first_bare_cr(data): the offset of the first CR in ``data`` (bytes) that no LF follows,
 * -1 if none (mime._BARE_CR.search is the reference). Every new body is checked for one, and
 * the regex's look-ahead at each CR of a CRLF body cost ~50 us per 100 KB (merge copies). */
static PyObject *first_bare_cr(PyObject *module, PyObject *data) {
    (void)module;
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "first_bare_cr needs bytes");
        return NULL;
    }
    const char *start = PyBytes_AS_STRING(data);
    const char *end = start + PyBytes_GET_SIZE(data);
    const char *p = start;
    while (p < end && (p = memchr(p, '\r', (size_t)(end - p))) != NULL) {
        if (p + 1 == end || p[1] != '\n') return PyLong_FromSsize_t(p - start);
        p += 2;
    }
    return PyLong_FromLong(-1);
}

static PyMethodDef methods[] = {
    {"first_bare_cr", (PyCFunction)first_bare_cr, METH_O,
     "first_bare_cr(data): offset of the first CR no LF follows, -1 if none"},
    {"common_run", (PyCFunction)(void (*)(void))common_run, METH_FASTCALL,
     "common_run(a, i, b, j): length of the longest common prefix of a[i:] and b[j:]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "textrun",
    "Scans of mail-merged copies in C (Python references in rewrite/).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_textrun(void) { return PyModule_Create(&module); }
