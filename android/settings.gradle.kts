// Deskhand for Android: one app module. Open this folder in Android Studio after running
// scripts/android-build once (it builds the Rust library and generates the Kotlin bindings).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "Deskhand"
include(":app")
