/* The fast shape key of rewrite/shapes.py (``_fast_tokens``), in C, for ASCII texts.
 *
 * The key itself is computed by fastkey_core.h (shared with proxy/_relay.c); this file only
 * turns it into Python objects. The Python version stays the reference (and in use for
 * non-ASCII texts, where this returns NotImplemented, and when this module is not built).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fastkey_core.h"

static PyObject *ICONST, *FCONST, *SCONST;

static PyObject *
fast_tokens(PyObject *module, PyObject *arg)
{
    const char *s;
    Py_ssize_t n, out_len = 0, nslots = 0;
    char *out;
    fk_slot *found;
    PyObject *slots = NULL, *result = NULL;

    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "fast_tokens() takes a str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(arg))
        Py_RETURN_NOTIMPLEMENTED;
    s = (const char *)PyUnicode_1BYTE_DATA(arg);
    n = PyUnicode_GET_LENGTH(arg);
    out = PyMem_Malloc(3 * (size_t)n + 1);
    found = PyMem_Malloc(((size_t)n + 1) * sizeof(fk_slot));
    if (out == NULL || found == NULL) {
        PyMem_Free(out);
        PyMem_Free(found);
        return PyErr_NoMemory();
    }
    if (!fk_scan(s, n, out, &out_len, found, &nslots)) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    if ((slots = PyList_New(nslots)) == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < nslots; k++) {
        PyObject *kind = found[k].kind == 'I' ? ICONST : found[k].kind == 'F' ? FCONST : SCONST;
        PyObject *slot = Py_BuildValue("(Onn)", kind, (Py_ssize_t)found[k].start, (Py_ssize_t)found[k].end);
        if (slot == NULL)
            goto done;
        PyList_SET_ITEM(slots, k, slot);
    }
    {
        PyObject *key = PyUnicode_FromStringAndSize(out, out_len);
        if (key != NULL) {
            result = PyTuple_Pack(2, key, slots);
            Py_DECREF(key);
        }
    }
done:
    PyMem_Free(out);
    PyMem_Free(found);
    Py_XDECREF(slots);
    return result;
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
