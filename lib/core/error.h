/*
 * The thread-local last error: every failing function records one message
 * where the failure is detected and returns the negative errno.
 */
#ifndef VDISK_CORE_ERROR_H
#define VDISK_CORE_ERROR_H

#include "../util/compiler.h"

/*
 * Record "message" (printf-style) as this thread's last error and return
 * -errnum. When errnum comes from a failed system call, pass errno and the
 * message gets ": strerror(errnum)" appended by vd_err_sys.
 */
int vd_err(int errnum, const char *fmt, ...) VD_PRINTF(2, 3);
int vd_err_sys(int errnum, const char *fmt, ...) VD_PRINTF(2, 3);

/*
 * On-disk corruption: records the message and returns -EUCLEAN
 * ("Structure needs cleaning"), the errno Linux uses for corrupt metadata.
 */
int vd_corrupt(const char *fmt, ...) VD_PRINTF(1, 2);

/* Put "prefix: " in front of the current message (module boundaries). */
void vd_err_prefix(const char *fmt, ...) VD_PRINTF(1, 2);

/* Record errnum with its strerror text unless a message is already set for
 * it. Used where a lower layer returned -errno without a message. */
int vd_err_default(int errnum);

/* Forget the last error (public entry points start with this). */
void vd_err_clear(void);

const char *vd_err_message(void);
int vd_err_errno(void);

#endif /* VDISK_CORE_ERROR_H */
