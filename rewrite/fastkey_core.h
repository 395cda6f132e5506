/* The fast shape key of rewrite/shapes.py (``_fast_tokens``) over a byte string: pure C, no Python.
 *
 * Shared by rewrite/_fastkey.c (the Python function) and proxy/_relay.c (the governed lane of the
 * relay thread), so both compute exactly one key. It must give exactly what the Python version
 * gives: the Python one is the reference; tests/rewrite/test_fastkey.py checks they agree on random
 * texts. Every rule below is one of the Python version's, in the same order, including how its
 * regular expression backtracks on an unterminated quoted identifier or string. ASCII texts only
 * (the callers check). Reads the text only; every index is checked against its length.
 */
#ifndef PGVEIL_FASTKEY_CORE_H
#define PGVEIL_FASTKEY_CORE_H

#include <stddef.h>
#include <string.h>

typedef ptrdiff_t fk_ssize;

typedef struct {
    char kind;           /* 'I' (ICONST), 'F' (FCONST) or 'S' (SCONST) */
    fk_ssize start, end; /* the literal is s[start:end] */
} fk_slot;

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }
static inline int is_name(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '$';
}
/* _JOINS: a name character, '.', or a quote */
static inline int joins(char c) { return is_name(c) || c == '.' || c == '\'' || c == '"'; }

/* '(?:[^q]|qq)*q' (min_reps 0) or '(?:[^q]|qq)+q' (min_reps 1) from s[i] == q, as Python's re matches
 * it: greedy, then giving back the last doubled quote when the text ends first. The end, or -1. */
static fk_ssize
quoted(const char *s, fk_ssize i, fk_ssize n, char q, int min_reps)
{
    fk_ssize j = i + 1, reps = 0, last_pair = -1;
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
static fk_ssize
number(const char *s, fk_ssize i, fk_ssize n)
{
    fk_ssize j = i;
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
        fk_ssize k = j + 1;
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
bad_after_string(const char *s, fk_ssize e, fk_ssize n)
{
    fk_ssize k = e;
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
dot_digit(const char *s, fk_ssize i, fk_ssize n)
{
    while (i < n && is_digit(s[i]))
        i++;
    return i + 1 < n && s[i] == '.' && is_digit(s[i + 1]);
}

/* ICONST unless beyond int4 or not plain digits (as the Python version decides) */
static char
number_kind(const char *s, fk_ssize start, fk_ssize end)
{
    fk_ssize k = start, len;
    while (k < end && s[k] == '0')
        k++;
    len = end - k;
    if (len == 0)
        return 'I';
    for (fk_ssize m = k; m < end; m++)
        if (!is_digit(s[m]))
            return 'F';
    if (len < 10 || (len == 10 && memcmp(s + k, "2147483647", 10) <= 0))
        return 'I';
    return 'F';
}

/* The key of s[0:n] into ``out`` (room for 3 * n + 1 bytes: a slot of one character becomes
 * three) and its slots into ``slots`` (room for n); 1 if found, 0 if the text is not shaped
 * this way (no slot, or something the fast key does not read exactly like PostgreSQL). */
static int
fk_scan(const char *s, fk_ssize n, char *out, fk_ssize *out_len_p, fk_slot *slots, fk_ssize *nslots_p)
{
    fk_ssize i = 0, copied = 0, out_len = 0, nslots = 0;
    for (fk_ssize k = 0; k < n; k++) {
        char c = s[k];
        if (c == '$' || c == '\\' || c == '\0' || (c == '/' && k + 1 < n && s[k + 1] == '*')
            || (c == '&' && k + 1 < n && (s[k + 1] == '\'' || s[k + 1] == '"')))
            return 0;
    }
    while (i < n) {
        char c = s[i], prev, kind;
        fk_ssize start = i, end;

        if (c == '"') {
            end = quoted(s, i, n, '"', 1);
            if (end < 0)
                return 0;  /* a lone quote */
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
                return 0;
            if (joins(prev) || bad_after_string(s, end, n))
                return 0;
            kind = 'S';
        }
        else {
            end = number(s, i, n);
            if (end < 0) {
                i++;
                continue;
            }
            if (joins(prev)) {
                if (prev == '.' || prev == '\'' || prev == '"' || dot_digit(s, start, n))
                    return 0;
                i = end;  /* digits that continue a name */
                continue;
            }
            if (end < n && joins(s[end]))
                return 0;
            kind = number_kind(s, start, end);
        }
        memcpy(out + out_len, s + copied, (size_t)(start - copied));
        out_len += start - copied;
        out[out_len] = '\0';
        out[out_len + 1] = kind;
        out[out_len + 2] = '\0';
        out_len += 3;
        copied = end;
        slots[nslots++] = (fk_slot){kind, start, end};
        i = end;
    }
    if (nslots == 0)
        return 0;
    memcpy(out + out_len, s + copied, (size_t)(n - copied));
    *out_len_p = out_len + n - copied;
    *nslots_p = nslots;
    return 1;
}

#endif
