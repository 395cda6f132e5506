/* The fast shape key of rewrite/shapes.py (``_fast_tokens``), in C, for ASCII texts.
 *
 * It must give exactly what the Python version gives: the Python one is the
 * reference (and stays in use for non-ASCII texts, where this returns
 * NotImplemented, and when this module is not built); tests/rewrite/
 * test_fastkey.py checks both agree on random texts. Every rule below is one
 * of the Python version's, in the same order, including how its regular
 * expression backtracks on an unterminated quoted identifier or string.
 * Reads the text only; every index is checked against its length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *ICONST, *FCONST, *SCONST;

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }
static inline int is_name(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '$';
}
/* _JOINS: a name character, '.', or a quote */
static inline int joins(char c) { return is_name(c) || c == '.' || c == '\'' || c == '"'; }

/* '(?:[^q]|qq)*q' (min_reps 0) or '(?:[^q]|qq)+q' (min_reps 1) from s[i] == q, as Python's re matches
 * it: greedy, then giving back the last doubled quote when the text ends first. The end, or -1. */
static Py_ssize_t
quoted(const char *s, Py_ssize_t i, Py_ssize_t n, char q, int min_reps)
{
    Py_ssize_t j = i + 1, reps = 0, last_pair = -1;
    while (j < n) {
        if (s[j] != q) {
            j++;
        }
        else if (j + 1 < n && s[j + 1] == q) {
            if (reps >= min_reps)
                last_pair = j;
            j += 2;
        }
        else {
            return reps >= min_reps ? j + 1 : -1;
        }
        reps++;
    }
    return last_pair >= 0 ? last_pair + 1 : -1;
}

/* ((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?) at i: the end, or -1 */
static Py_ssize_t
number(const char *s, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = i;
    if (is_digit(s[j])) {
        while (j < n && is_digit(s[j]))
            j++;
        if (j < n && s[j] == '.') {
            j++;
            while (j < n && is_digit(s[j]))
                j++;
        }
    }
    else if (s[j] == '.' && j + 1 < n && is_digit(s[j + 1])) {
        j += 1;
        while (j < n && is_digit(s[j]))
            j++;
    }
    else {
        return -1;
    }
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        Py_ssize_t k = j + 1;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k < n && is_digit(s[k])) {
            while (k < n && is_digit(s[k]))
                k++;
            j = k;
        }
    }
    return j;
}

/* _BAD_AFTER_STRING at e: [ \t\f\v]*(?:[\n\r'"]|--) or a name character */
static int
bad_after_string(const char *s, Py_ssize_t e, Py_ssize_t n)
{
    Py_ssize_t k = e;
    while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\f' || s[k] == '\v'))
        k++;
    if (k < n && (s[k] == '\n' || s[k] == '\r' || s[k] == '\'' || s[k] == '"'))
        return 1;
    if (k + 1 < n && s[k] == '-' && s[k + 1] == '-')
        return 1;
    return e < n && is_name(s[e]);
}

/* _DOT_DIGIT at i: [0-9]*\.[0-9] */
static int
dot_digit(const char *s, Py_ssize_t i, Py_ssize_t n)
{
    while (i < n && is_digit(s[i]))
        i++;
    return i + 1 < n && s[i] == '.' && is_digit(s[i + 1]);
}

/* ICONST unless beyond int4 or not plain digits (as the Python version decides) */
static PyObject *
number_kind(const char *s, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t k = start, len;
    while (k < end && s[k] == '0')
        k++;
    len = end - k;
    if (len == 0)
        return ICONST;
    for (Py_ssize_t m = k; m < end; m++)
        if (!is_digit(s[m]))
            return FCONST;
    if (len < 10 || (len == 10 && memcmp(s + k, "2147483647", 10) <= 0))
        return ICONST;
    return FCONST;
}

static PyObject *
fast_tokens(PyObject *module, PyObject *arg)
{
    const char *s;
    Py_ssize_t n, i = 0, copied = 0, out_len = 0;
    char *out;
    PyObject *slots, *result = NULL;

    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "fast_tokens() takes a str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(arg))
        Py_RETURN_NOTIMPLEMENTED;
    s = (const char *)PyUnicode_1BYTE_DATA(arg);
    n = PyUnicode_GET_LENGTH(arg);
    for (Py_ssize_t k = 0; k < n; k++) {
        char c = s[k];
        if (c == '$' || c == '\\' || c == '\0' || (c == '/' && k + 1 < n && s[k + 1] == '*')
            || (c == '&' && k + 1 < n && (s[k + 1] == '\'' || s[k + 1] == '"')))
            Py_RETURN_NONE;
    }
    if ((slots = PyList_New(0)) == NULL)
        return NULL;
    if ((out = PyMem_Malloc(3 * (size_t)n + 1)) == NULL) {  /* a slot of one character becomes three */
        Py_DECREF(slots);
        return PyErr_NoMemory();
    }
    while (i < n) {
        char c = s[i], prev;
        Py_ssize_t start = i, end;
        PyObject *kind, *slot;
        const char *marker;

        if (c == '"') {
            end = quoted(s, i, n, '"', 1);
            if (end < 0)
                goto none;  /* a lone quote */
            i = end;
            continue;
        }
        if (c == '-') {
            if (i + 1 < n && s[i + 1] == '-') {
                while (i < n && s[i] != '\n' && s[i] != '\r')
                    i++;
            }
            else {
                i++;
            }
            continue;
        }
        if (c != '\'' && c != '.' && !is_digit(c)) {
            i++;
            continue;
        }
        prev = start ? s[start - 1] : ' ';
        if (c == '\'') {
            end = quoted(s, i, n, '\'', 0);
            if (end < 0)
                goto none;
            if (joins(prev) || bad_after_string(s, end, n))
                goto none;
            kind = SCONST;
        }
        else {
            end = number(s, i, n);
            if (end < 0) {
                i++;
                continue;
            }
            if (joins(prev)) {
                if (prev == '.' || prev == '\'' || prev == '"' || dot_digit(s, start, n))
                    goto none;
                i = end;  /* digits that continue a name */
                continue;
            }
            if (end < n && joins(s[end]))
                goto none;
            kind = number_kind(s, start, end);
        }
        memcpy(out + out_len, s + copied, (size_t)(start - copied));
        out_len += start - copied;
        marker = kind == ICONST ? "\0I\0" : kind == FCONST ? "\0F\0" : "\0S\0";
        memcpy(out + out_len, marker, 3);
        out_len += 3;
        copied = end;
        slot = Py_BuildValue("(Onn)", kind, start, end);
        if (slot == NULL || PyList_Append(slots, slot) < 0) {
            Py_XDECREF(slot);
            goto error;
        }
        Py_DECREF(slot);
        i = end;
    }
    if (PyList_GET_SIZE(slots) == 0)
        goto none;
    memcpy(out + out_len, s + copied, (size_t)(n - copied));
    out_len += n - copied;
    {
        PyObject *key = PyUnicode_FromStringAndSize(out, out_len);
        if (key != NULL) {
            result = PyTuple_Pack(2, key, slots);
            Py_DECREF(key);
        }
    }
    PyMem_Free(out);
    Py_DECREF(slots);
    return result;

none:
    PyMem_Free(out);
    Py_DECREF(slots);
    Py_RETURN_NONE;
error:
    PyMem_Free(out);
    Py_DECREF(slots);
    return NULL;
}

static PyMethodDef fastkey_methods[] = {
    {"fast_tokens", fast_tokens, METH_O,
     "fast_tokens(sql) -> None | (key, [(kind, start, end), ...]) | NotImplemented (not ASCII: use the Python one)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastkey_module = {
    PyModuleDef_HEAD_INIT, "rewrite._fastkey", "The fast shape key of rewrite.shapes, in C.", -1, fastkey_methods,
};

PyMODINIT_FUNC
PyInit__fastkey(void)
{
    ICONST = PyUnicode_InternFromString("ICONST");
    FCONST = PyUnicode_InternFromString("FCONST");
    SCONST = PyUnicode_InternFromString("SCONST");
    if (ICONST == NULL || FCONST == NULL || SCONST == NULL)
        return NULL;
    return PyModule_Create(&fastkey_module);
}
