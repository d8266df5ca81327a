// swift-tools-version:5.9
// DeskhandKit: the iOS app's logic outside its UI (view models on the generated uniffi bindings),
// buildable and testable with the Swift toolchain on Linux and macOS as well as in Xcode.
// Needs a Swift 5.10 compiler or newer (the generated bindings use `nonisolated(unsafe)`).
//
// Where the Rust library comes from (see ../README.md):
// - `DeskhandMobileFFI.xcframework` next to this file (made by `scripts/ios-build` on a Mac): a
//   binary target with the static library for iOS devices and the iOS simulator.
// - otherwise, or with `DESKHAND_FFI=system` in the environment: a system library target whose
//   module map links `libdeskhand_mobile_bindings` from the linker's search path (`swift test
//   -Xlinker -L<workspace>/target/debug` after `scripts/bindings --debug`).
// Either way `Sources/DeskhandMobile/DeskhandMobile.swift` (and, for the system library, the header
// next to the module map) are the generated bindings, copied in by `use-bindings`; not committed.
import Foundation
import PackageDescription

let xcframework = "DeskhandMobileFFI.xcframework"
let forceSystem = ProcessInfo.processInfo.environment["DESKHAND_FFI"] == "system"
let haveXCFramework = FileManager.default.fileExists(
    atPath: Context.packageDirectory + "/" + xcframework)

let ffi: Target = (haveXCFramework && !forceSystem)
    ? .binaryTarget(name: "DeskhandMobileFFI", path: xcframework)
    : .systemLibrary(name: "DeskhandMobileFFI", path: "Sources/DeskhandMobileFFI")

// What the Rust static library needs from the system on Apple platforms (iroh's network
// monitoring and DNS configuration, the TLS roots): a static library does not carry these.
let apple: [Platform] = [.iOS, .macOS]
let appleLinks: [LinkerSetting] = [
    .linkedFramework("CoreFoundation", .when(platforms: apple)),
    .linkedFramework("Security", .when(platforms: apple)),
    .linkedFramework("SystemConfiguration", .when(platforms: apple)),
    .linkedLibrary("resolv", .when(platforms: apple)),
]

let package = Package(
    name: "DeskhandKit",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "DeskhandKit", targets: ["DeskhandKit"]),
    ],
    targets: [
        ffi,
        // The generated Swift bindings (module name from mobile-bindings/uniffi.toml).
        .target(
            name: "DeskhandMobile",
            dependencies: ["DeskhandMobileFFI"],
            path: "Sources/DeskhandMobile",
            linkerSettings: appleLinks
        ),
        // The view models: Foundation and the bindings only (no UIKit, SwiftUI, Combine).
        .target(
            name: "DeskhandKit",
            dependencies: ["DeskhandMobile"],
            path: "Sources/DeskhandKit"
        ),
        .testTarget(
            name: "DeskhandKitTests",
            dependencies: ["DeskhandKit", "DeskhandMobile"],
            path: "Tests/DeskhandKitTests"
        ),
    ]
)
