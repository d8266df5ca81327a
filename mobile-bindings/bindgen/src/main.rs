//! The uniffi bindgen, built from this workspace so that it is exactly the library's uniffi version
//! (`scripts/bindings` runs it).

fn main() {
    uniffi::uniffi_bindgen_main()
}
