/* plain_numbers(text): whether every number in a JSON text, outside its strings, is an
 * integer of at most 18 digits (no fraction, no exponent). events/payload.py's reference
 * is _plain_numbers_reference; tests/test_payload_exact.py holds the two together.
 *
 * orjson reads such a text exactly as the stdlib does (integers beyond 64 bits are what it
 * reads approximately, as floats), so its value can be taken without the check that
 * encodes it again and compares: that check was a third of a payload's decoding, once per
 * injection the log follower joins. Texts with other numbers keep that check.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#define MAX_DIGITS 18

/* The common case, one byte per character: strings skipped with memchr. A quote ends the
 * string unless an odd run of backslashes comes before it (each pair is one escaped
 * backslash); the run cannot reach past the opening quote. */
static PyObject *plain_numbers_1byte(const unsigned char *s, Py_ssize_t len) {
    const unsigned char *p = s, *end = s + len;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') {
            const unsigned char *open = p;
            p++;
            for (;;) {
                const unsigned char *q = memchr(p, '"', (size_t)(end - p));
                if (q == NULL) Py_RETURN_TRUE; /* unterminated: nothing after it is a number */
                const unsigned char *b = q;
                while (b > open + 1 && b[-1] == '\\') b--;
                p = q + 1;
                if ((q - b) % 2 == 0) break;
            }
            continue;
        }
        if (c >= '0' && c <= '9') {
            const unsigned char *start = p;
            while (p < end && *p >= '0' && *p <= '9') p++;
            if (p - start > MAX_DIGITS) Py_RETURN_FALSE;
            if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) Py_RETURN_FALSE;
            continue;
        }
        p++;
    }
    Py_RETURN_TRUE;
}

static PyObject *plain_numbers(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "plain_numbers() takes str");
        return NULL;
    }
    if (PyUnicode_KIND(arg) == PyUnicode_1BYTE_KIND)
        return plain_numbers_1byte(PyUnicode_1BYTE_DATA(arg), PyUnicode_GET_LENGTH(arg));
    int kind = PyUnicode_KIND(arg);
    const void *data = PyUnicode_DATA(arg);
    Py_ssize_t len = PyUnicode_GET_LENGTH(arg);
    int in_string = 0;
    Py_ssize_t i = 0;
    while (i < len) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (in_string) {
            if (c == '\\')
                i += 2; /* the escaped character, whatever it is, is not the end */
            else {
                if (c == '"') in_string = 0;
                i++;
            }
            continue;
        }
        if (c == '"') {
            in_string = 1;
            i++;
            continue;
        }
        if (c >= '0' && c <= '9') {
            Py_ssize_t start = i;
            while (i < len) {
                c = PyUnicode_READ(kind, data, i);
                if (c < '0' || c > '9') break;
                i++;
            }
            if (i - start > MAX_DIGITS) Py_RETURN_FALSE;
            if (i < len && (c == '.' || c == 'e' || c == 'E')) Py_RETURN_FALSE;
            continue;
        }
        i++;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"plain_numbers", (PyCFunction)plain_numbers, METH_O,
     "plain_numbers(text): every number outside strings an integer of at most 18 digits"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "jsonnum",
    "A scan of JSON numbers in C (reference: events/payload.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_jsonnum(void) { return PyModule_Create(&module); }
