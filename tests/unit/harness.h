/*
 * A minimal unit-test harness. A test program defines TEST(name) { ... }
 * functions, runs each with RUN(name) from main and ends with
 * "return harness_exit();". Each test prints "ok name" or "not ok name".
 * Exit status: 0 all passed, 77 skipped (SKIP_ALL), 1 a check failed.
 */
#ifndef VDISK_TESTS_UNIT_HARNESS_H
#define VDISK_TESTS_UNIT_HARNESS_H

#undef NDEBUG
#include <assert.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_failed; /* checks failed in the running test */
static int harness_failed_tests;

#define CHECK(expr)                                                          \
    do {                                                                     \
        if (!(expr)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                    #expr);                                                  \
            harness_failed++;                                                \
        }                                                                    \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                  \
    do {                                                                    \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                    \
        if (a_ != b_) {                                                     \
            fprintf(stderr,                                                 \
                    "%s:%d: %s == %s failed: %" PRIu64 " != %" PRIu64 "\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_);                    \
            harness_failed++;                                               \
        }                                                                   \
    } while (0)

#define CHECK_STREQ(a, b)                                                    \
    do {                                                                     \
        const char *a_ = (a), *b_ = (b);                                     \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                             \
            fprintf(stderr, "%s:%d: %s == %s failed:\n  \"%s\"\n  \"%s\"\n", \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)",          \
                    b_ ? b_ : "(null)");                                     \
            harness_failed++;                                                \
        }                                                                    \
    } while (0)

#define TEST(name) static void test_##name(void)
#define RUN(name)  harness_run(#name, test_##name)

/* Skip the whole program (a prerequisite is missing). */
#define SKIP_ALL(why)              \
    do {                           \
        printf("skip: %s\n", why); \
        exit(77);                  \
    } while (0)

static inline void harness_run(const char *name, void (*fn)(void))
{
    harness_failed = 0;
    fn();
    printf("%s %s\n", harness_failed ? "not ok" : "ok", name);
    fflush(stdout);
    if (harness_failed) {
        harness_failed_tests++;
    }
}

static inline int harness_exit(void)
{
    return harness_failed_tests ? 1 : 0;
}

#endif /* VDISK_TESTS_UNIT_HARNESS_H */
