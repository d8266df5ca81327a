/* The Apple SDK header ring's C code reads, for an iOS device build without Xcode (no SDK here):
 * the values it has for aarch64-apple-ios. */
#ifndef DESKHAND_NOSYSROOT_TARGET_CONDITIONALS_H
#define DESKHAND_NOSYSROOT_TARGET_CONDITIONALS_H
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 0
#define TARGET_OS_IPHONE 1
#define TARGET_OS_IOS 1
#define TARGET_OS_SIMULATOR 0
#endif
