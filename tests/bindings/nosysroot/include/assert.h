/* Just enough of <assert.h> to compile the C parts of dependencies (blake3's NEON code) for a
 * mobile target without its SDK (no Android NDK in CI). Release builds define NDEBUG anyway. */
#ifndef DESKHAND_NOSYSROOT_ASSERT_H
#define DESKHAND_NOSYSROOT_ASSERT_H
#define assert(x) ((void)0)
#define static_assert _Static_assert
#endif
