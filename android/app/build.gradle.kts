// The Deskhand app. The Rust library (app/src/main/jniLibs/<abi>/libdeskhand_mobile_bindings.so)
// and its Kotlin bindings (app/generated/uniffi, package deskhand.mobile) are made by
// scripts/android-build and not committed.
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

android {
    namespace = "dev.deskhand.app"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.deskhand.app"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }

    buildFeatures {
        compose = true
    }

    sourceSets["main"].java.srcDir("generated/uniffi")
}

dependencies {
    // JNA as an Android archive: it carries libjnidispatch.so for each ABI.
    implementation("net.java.dev.jna:jna:5.15.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")

    implementation(platform("androidx.compose:compose-bom:2024.12.01"))
    implementation("androidx.compose.ui:ui")
    implementation("androidx.compose.material3:material3")
    implementation("androidx.compose.material:material-icons-core")
    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.lifecycle:lifecycle-viewmodel-compose:2.8.7")
    implementation("androidx.lifecycle:lifecycle-runtime-compose:2.8.7")
    implementation("androidx.core:core-ktx:1.15.0")
    // BiometricPrompt needs a FragmentActivity (biometric 1.1.0 alone would pull fragment 1.2),
    // and its fingerprint dialog before Android 9 an AppCompat theme.
    implementation("androidx.fragment:fragment-ktx:1.8.5")
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.biometric:biometric:1.1.0")
    // The pair screen's camera and QR decoding (no Google Play services).
    implementation("androidx.camera:camera-core:1.4.1")
    implementation("androidx.camera:camera-camera2:1.4.1")
    implementation("androidx.camera:camera-lifecycle:1.4.1")
    implementation("androidx.camera:camera-view:1.4.1")
    implementation("com.google.zxing:core:3.5.3")
    // Wake-ups: UnifiedPush (3.x makes and keeps the RFC 8291 keys and decrypts), and the
    // expedited job that syncs when one arrives.
    implementation("org.unifiedpush.android:connector:3.0.10")
    implementation("androidx.work:work-runtime-ktx:2.10.0")
    // uniffi's Android bindings use @RequiresApi.
    implementation("androidx.annotation:annotation:1.9.1")
}

// A clear message instead of hundreds of "unresolved reference" errors.
val checkRustParts by tasks.registering {
    val bindings = file("generated/uniffi/deskhand/mobile/deskhand_mobile_bindings.kt")
    val lib = file("src/main/jniLibs/arm64-v8a/libdeskhand_mobile_bindings.so")
    doLast {
        if (!bindings.exists() || !lib.exists()) {
            throw GradleException(
                "The Rust library or its Kotlin bindings are missing: run scripts/android-build " +
                    "from the repository root once (it needs the Android NDK, cargo-ndk and the Rust " +
                    "targets aarch64-linux-android and x86_64-linux-android, and says which are missing).",
            )
        }
    }
}
tasks.named("preBuild") { dependsOn(checkRustParts) }
