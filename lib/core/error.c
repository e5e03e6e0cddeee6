/*
 * The thread-local last error (see error.h). Messages longer than the
 * buffer are truncated; nothing here allocates, so recording an error
 * cannot itself fail.
 */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define ERR_MSG_SIZE 1024

struct last_error {
    int errnum;             /* positive errno, 0 when clear */
    char msg[ERR_MSG_SIZE]; /* "" when no message is recorded */
};

static _Thread_local struct last_error last_error;

/* Callers pass a positive errno; tolerate -errno, and never return 0. */
static int normalize_errnum(int errnum)
{
    if (errnum < 0) {
        errnum = -errnum;
    }
    return errnum > 0 ? errnum : EIO;
}

/* strerror without its thread-safety problems. */
static const char *err_text(int errnum, char *buf, size_t len)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(errnum, buf, len);
#else
    if (strerror_r(errnum, buf, len) != 0) {
        snprintf(buf, len, "Unknown error %d", errnum);
    }
    return buf;
#endif
}

/* Append s to the NUL-terminated buf of size bytes, truncating. */
static void buf_append(char *buf, size_t size, const char *s)
{
    size_t len = strlen(buf);
    size_t n = strlen(s);

    if (len + 1 >= size) {
        return;
    }
    if (n > size - 1 - len) {
        n = size - 1 - len;
    }
    memcpy(buf + len, s, n);
    buf[len + n] = '\0';
}

/*
 * Record errnum and the message, optionally followed by ": strerror".
 * The message is formatted into a scratch buffer first, so arguments may
 * point into the current message (vd_err(e, "%s", vd_err_message())).
 */
static int record(int errnum, bool add_strerror, const char *fmt, va_list ap)
    VD_PRINTF(3, 0);

static int record(int errnum, bool add_strerror, const char *fmt, va_list ap)
{
    char tmp[ERR_MSG_SIZE];
    char ebuf[128];
    int n;

    errnum = normalize_errnum(errnum);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    if (n < 0) {
        tmp[0] = '\0';
    }
    if (add_strerror) {
        buf_append(tmp, sizeof(tmp), ": ");
        buf_append(tmp, sizeof(tmp), err_text(errnum, ebuf, sizeof(ebuf)));
    }
    memcpy(last_error.msg, tmp, strlen(tmp) + 1);
    last_error.errnum = errnum;
    return -errnum;
}

int vd_err(int errnum, const char *fmt, ...)
{
    va_list ap;
    int ret;

    va_start(ap, fmt);
    ret = record(errnum, false, fmt, ap);
    va_end(ap);
    return ret;
}

int vd_err_sys(int errnum, const char *fmt, ...)
{
    va_list ap;
    int ret;

    va_start(ap, fmt);
    ret = record(errnum, true, fmt, ap);
    va_end(ap);
    return ret;
}

int vd_corrupt(const char *fmt, ...)
{
    va_list ap;
    int ret;

    va_start(ap, fmt);
    ret = record(EUCLEAN, false, fmt, ap);
    va_end(ap);
    return ret;
}

void vd_err_prefix(const char *fmt, ...)
{
    char tmp[ERR_MSG_SIZE];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if (last_error.msg[0]) {
        buf_append(tmp, sizeof(tmp), ": ");
        buf_append(tmp, sizeof(tmp), last_error.msg);
    }
    memcpy(last_error.msg, tmp, strlen(tmp) + 1);
}

int vd_err_default(int errnum)
{
    char ebuf[128];

    errnum = normalize_errnum(errnum);
    if (!last_error.msg[0] || last_error.errnum != errnum) {
        last_error.msg[0] = '\0';
        buf_append(last_error.msg, sizeof(last_error.msg),
                   err_text(errnum, ebuf, sizeof(ebuf)));
        last_error.errnum = errnum;
    }
    return -errnum;
}

void vd_err_clear(void)
{
    last_error.errnum = 0;
    last_error.msg[0] = '\0';
}

const char *vd_err_message(void)
{
    return last_error.msg;
}

int vd_err_errno(void)
{
    return last_error.errnum;
}
