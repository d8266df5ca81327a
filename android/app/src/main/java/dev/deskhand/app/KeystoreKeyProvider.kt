package dev.deskhand.app

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import deskhand.mobile.ApiException
import deskhand.mobile.KeyProvider
import deskhand.mobile.newDeviceSecret
import java.io.File
import java.security.KeyStore
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/**
 * The device key, kept wrapped by a non-exportable AES key of the Android Keystore: the file
 * [wrapped] holds the 12-byte IV and the AES-GCM ciphertext of the 32-byte secret. The secret is
 * created on first use and never leaves the app unwrapped.
 */
class KeystoreKeyProvider(private val wrapped: File) : KeyProvider {
    override fun deviceSecret(): ByteArray = try {
        if (wrapped.exists()) unwrap(wrapped.readBytes()) else create()
    } catch (e: ApiException) {
        throw e
    } catch (e: Exception) {
        throw ApiException.Key("the Android Keystore failed: ${e.message ?: e.javaClass.simpleName}")
    }

    private fun create(): ByteArray {
        val secret = newDeviceSecret()
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.ENCRYPT_MODE, wrappingKey())
        val tmp = File(wrapped.path + ".tmp")
        tmp.writeBytes(cipher.iv + cipher.doFinal(secret))
        if (!tmp.renameTo(wrapped)) throw ApiException.Key("cannot save the wrapped device key in ${wrapped.parent}")
        return secret
    }

    private fun unwrap(blob: ByteArray): ByteArray {
        if (blob.size <= IV_BYTES) throw ApiException.Key("the wrapped device key is damaged (${blob.size} bytes)")
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.DECRYPT_MODE, wrappingKey(), GCMParameterSpec(128, blob, 0, IV_BYTES))
        return cipher.doFinal(blob, IV_BYTES, blob.size - IV_BYTES)
    }

    private fun wrappingKey(): SecretKey {
        val store = KeyStore.getInstance(KEYSTORE).apply { load(null) }
        (store.getEntry(ALIAS, null) as? KeyStore.SecretKeyEntry)?.let { return it.secretKey }
        val generator = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, KEYSTORE)
        generator.init(
            KeyGenParameterSpec.Builder(ALIAS, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .build(),
        )
        return generator.generateKey()
    }

    private companion object {
        const val KEYSTORE = "AndroidKeyStore"
        const val ALIAS = "deskhand-device-key-wrap"
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        const val IV_BYTES = 12
    }
}
