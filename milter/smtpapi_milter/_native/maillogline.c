/* The per-line parsing of the Postfix lines the log follower keeps, in C; the regular
 * expressions in maillog/lines.py (_CLASSIC) and maillog/postfix.py (_DELIVERY) stay the
 * reference these are tested against (tests/test_maillog_native.py).
 *
 * Matching those expressions and taking their groups was some 17% of the follower's CPU
 * over bench/maillog_bench.py's log. Both expressions are deterministic enough to be
 * walked left to right without backtracking (each greedy run must be followed by a
 * character it cannot hold), which is what this does.
 *
 * Only ASCII input is handled here: Python's str patterns match Unicode digits with \d and
 * Unicode spaces with \s, which a byte walk would get wrong. Anything else is handed back
 * (None from classic, NotImplemented from delivery) for the expression to decide.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* Python's \s on ASCII: str.isspace (tab, LF, VT, FF, CR, the four separators, space). */
static int is_space(unsigned char c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_alnum(unsigned char c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Does s[i:] start with the literal lit (of length n)? */
static int starts(const char *s, Py_ssize_t len, Py_ssize_t i, const char *lit, Py_ssize_t n) {
    return i >= 0 && len - i >= n && memcmp(s + i, lit, (size_t)n) == 0;
}

#define STARTS(s, len, i, lit) starts(s, len, i, lit, (Py_ssize_t)(sizeof(lit) - 1))

static PyObject *ascii_str(const char *s, Py_ssize_t start, Py_ssize_t end) {
    return PyUnicode_DecodeASCII(s + start, end - start, NULL);
}

/* classic(raw: bytes) -> (written, tag, pid, text) | None
 *
 * The groups of lines._CLASSIC matched on raw.decode(): ``written`` is the stamp as
 * written (the line up to the seconds), ``pid`` "" when there is none. None when the line
 * is not ASCII without newlines or does not match: the Python path then decides. */
static PyObject *classic(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "classic() takes bytes");
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(arg);
    Py_ssize_t len = PyBytes_GET_SIZE(arg);
    for (Py_ssize_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c >= 0x80 || c == '\n') Py_RETURN_NONE;
    }
    const unsigned char *u = (const unsigned char *)s;
    Py_ssize_t i = 0;
    /* [A-Z][a-z]{2} + */
    if (len < 3 || !(u[0] >= 'A' && u[0] <= 'Z') || !(u[1] >= 'a' && u[1] <= 'z') ||
        !(u[2] >= 'a' && u[2] <= 'z'))
        Py_RETURN_NONE;
    i = 3;
    if (i >= len || u[i] != ' ') Py_RETURN_NONE;
    while (i < len && u[i] == ' ') i++;
    /* \d{1,2} followed by a space */
    Py_ssize_t d = i;
    while (i < len && is_digit(u[i]) && i - d < 2) i++;
    if (i == d || i >= len || u[i] != ' ') Py_RETURN_NONE;
    i++;
    /* \d\d:\d\d:\d\d */
    if (len - i < 8 || !is_digit(u[i]) || !is_digit(u[i + 1]) || u[i + 2] != ':' ||
        !is_digit(u[i + 3]) || !is_digit(u[i + 4]) || u[i + 5] != ':' || !is_digit(u[i + 6]) ||
        !is_digit(u[i + 7]))
        Py_RETURN_NONE;
    i += 8;
    Py_ssize_t written_end = i;
    /* " \S+ " : the host runs to the first space of any kind, which must be a blank */
    if (i >= len || u[i] != ' ') Py_RETURN_NONE;
    i++;
    Py_ssize_t h = i;
    while (i < len && !is_space(u[i])) i++;
    if (i == h || i >= len || u[i] != ' ') Py_RETURN_NONE;
    i++;
    /* tag: [^\s\[:]+ */
    Py_ssize_t tag_start = i;
    while (i < len && !is_space(u[i]) && u[i] != '[' && u[i] != ':') i++;
    Py_ssize_t tag_end = i;
    if (tag_end == tag_start) Py_RETURN_NONE;
    /* (?:\[(\d+)\])?: */
    Py_ssize_t pid_start = 0, pid_end = 0;
    if (i < len && u[i] == '[') {
        Py_ssize_t p = i + 1;
        while (p < len && is_digit(u[p])) p++;
        if (p > i + 1 && p < len && u[p] == ']' && STARTS(s, len, p + 1, ": ")) {
            pid_start = i + 1;
            pid_end = p;
            i = p + 1;
        }
    }
    if (!STARTS(s, len, i, ": ")) Py_RETURN_NONE;
    i += 2;
    PyObject *written = ascii_str(s, 0, written_end);
    PyObject *tag = ascii_str(s, tag_start, tag_end);
    PyObject *pid = ascii_str(s, pid_start, pid_end);
    PyObject *text = ascii_str(s, i, len);
    if (written == NULL || tag == NULL || pid == NULL || text == NULL) {
        Py_XDECREF(written);
        Py_XDECREF(tag);
        Py_XDECREF(pid);
        Py_XDECREF(text);
        return NULL;
    }
    PyObject *out = PyTuple_New(4);
    if (out == NULL) {
        Py_DECREF(written);
        Py_DECREF(tag);
        Py_DECREF(pid);
        Py_DECREF(text);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, written);
    PyTuple_SET_ITEM(out, 1, tag);
    PyTuple_SET_ITEM(out, 2, pid);
    PyTuple_SET_ITEM(out, 3, text);
    return out;
}

#define GROUPS 9

/* delivery(text: str) -> the 9 groups of postfix._DELIVERY.match(text) | None | NotImplemented
 *
 * (qid, to, orig, relay, reuse, delay, dsn, status, reason), None for a group that did not
 * take part, as Match.groups() gives them; None when it does not match; NotImplemented for
 * text that is not ASCII without newlines (the expression decides). */
static PyObject *delivery(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "delivery() takes str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(arg)) Py_RETURN_NOTIMPLEMENTED;
    const char *s = (const char *)PyUnicode_DATA(arg);
    Py_ssize_t len = PyUnicode_GET_LENGTH(arg);
    if (memchr(s, '\n', (size_t)len) != NULL) Py_RETURN_NOTIMPLEMENTED;
    const unsigned char *u = (const unsigned char *)s;
    /* start and end of each group; start < 0: not taking part */
    Py_ssize_t gs[GROUPS], ge[GROUPS];
    for (int g = 0; g < GROUPS; g++) gs[g] = ge[g] = -1;
    Py_ssize_t i = 0, j;
    /* (?P<qid>[0-9A-Za-z]+): to=< */
    while (i < len && is_alnum(u[i])) i++;
    if (i == 0 || !STARTS(s, len, i, ": to=<")) Py_RETURN_NONE;
    gs[0] = 0;
    ge[0] = i;
    i += 6;
    /* (?P<to>[^>]*)>,  */
    j = i;
    while (j < len && u[j] != '>') j++;
    if (!STARTS(s, len, j, ">, ")) Py_RETURN_NONE;
    gs[1] = i;
    ge[1] = j;
    i = j + 3;
    /* (?:orig_to=<(?P<orig>[^>]*)>, )? : taken when it all matches (if it does and what
     * follows fails, skipping it cannot help: "relay=" would have to be at "orig_to") */
    if (STARTS(s, len, i, "orig_to=<")) {
        j = i + 9;
        while (j < len && u[j] != '>') j++;
        if (STARTS(s, len, j, ">, ")) {
            gs[2] = i + 9;
            ge[2] = j;
            i = j + 3;
        }
    }
    /* relay=(?P<relay>[^,]*),  */
    if (!STARTS(s, len, i, "relay=")) Py_RETURN_NONE;
    i += 6;
    j = i;
    while (j < len && u[j] != ',') j++;
    if (!STARTS(s, len, j, ", ")) Py_RETURN_NONE;
    gs[3] = i;
    ge[3] = j;
    i = j + 2;
    /* (?:conn_use=(?P<reuse>\d+), )? */
    if (STARTS(s, len, i, "conn_use=")) {
        j = i + 9;
        while (j < len && is_digit(u[j])) j++;
        if (j > i + 9 && STARTS(s, len, j, ", ")) {
            gs[4] = i + 9;
            ge[4] = j;
            i = j + 2;
        }
    }
    /* delay=(?P<delay>[\d.]+),  */
    if (!STARTS(s, len, i, "delay=")) Py_RETURN_NONE;
    i += 6;
    j = i;
    while (j < len && (is_digit(u[j]) || u[j] == '.')) j++;
    if (j == i || !STARTS(s, len, j, ", ")) Py_RETURN_NONE;
    gs[5] = i;
    ge[5] = j;
    i = j + 2;
    /* (?:delays=[^,]*, )? */
    if (STARTS(s, len, i, "delays=")) {
        j = i + 7;
        while (j < len && u[j] != ',') j++;
        if (STARTS(s, len, j, ", ")) i = j + 2;
    }
    /* dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status= */
    if (!STARTS(s, len, i, "dsn=")) Py_RETURN_NONE;
    i += 4;
    gs[6] = i;
    if (i + 1 >= len || !is_digit(u[i]) || u[i + 1] != '.') Py_RETURN_NONE;
    i += 2;
    for (int part = 0; part < 2; part++) {
        j = i;
        while (j < len && is_digit(u[j]) && j - i < 3) j++;
        if (j == i) Py_RETURN_NONE;
        i = j;
        if (part == 0) {
            if (i >= len || u[i] != '.') Py_RETURN_NONE;
            i++;
        }
    }
    ge[6] = i;
    if (!STARTS(s, len, i, ", status=")) Py_RETURN_NONE;
    i += 9;
    /* (?P<status>[a-z]+) */
    j = i;
    while (j < len && u[j] >= 'a' && u[j] <= 'z') j++;
    if (j == i) Py_RETURN_NONE;
    gs[7] = i;
    ge[7] = j;
    i = j;
    /* (?: \((?P<reason>.*)\))? : .* is greedy, so the reason ends at the last ")" */
    if (STARTS(s, len, i, " (")) {
        Py_ssize_t close = len - 1;
        while (close >= i + 2 && u[close] != ')') close--;
        if (close >= i + 2) {
            gs[8] = i + 2;
            ge[8] = close;
        }
    }
    PyObject *out = PyTuple_New(GROUPS);
    if (out == NULL) return NULL;
    for (int g = 0; g < GROUPS; g++) {
        PyObject *item;
        if (gs[g] < 0) {
            item = Py_None;
            Py_INCREF(item);
        } else {
            item = ascii_str(s, gs[g], ge[g]);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyTuple_SET_ITEM(out, g, item);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"classic", (PyCFunction)classic, METH_O,
     "classic(raw): (written, tag, pid, text) of a classic syslog line, or None"},
    {"delivery", (PyCFunction)delivery, METH_O,
     "delivery(text): the groups of a Postfix delivery line, None, or NotImplemented"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "maillogline",
    "Postfix log line parsing in C (references: maillog/lines.py, maillog/postfix.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_maillogline(void) { return PyModule_Create(&module); }
