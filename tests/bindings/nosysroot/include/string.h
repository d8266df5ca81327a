/* Just enough of <string.h> for blake3's C code without a target SDK: declarations only; the
 * app's link against the platform's libc provides them. */
#ifndef DESKHAND_NOSYSROOT_STRING_H
#define DESKHAND_NOSYSROOT_STRING_H
#include <stddef.h>
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
#endif
