import DeskhandKit
import Foundation
import Security

/// The device key in the Keychain: a generic password readable only while the device is unlocked,
/// only on this device (`kSecAttrAccessibleWhenUnlockedThisDeviceOnly`: never in a backup, never
/// synced to iCloud Keychain). Created once with the core's `newDeviceSecret()` and handed to the
/// core through the bindings' `KeyProvider` when the phone opens.
///
/// Consequence of "when unlocked": if iOS launches the app for a background refresh while the
/// device is locked and the phone is not open yet, opening fails with `ApiError.Key` and that
/// refresh is skipped; a phone opened earlier in the same process keeps its key in memory.
final class KeychainKeyProvider: KeyProvider {
    private let service: String
    private let account = "device-secret"

    /// A provider for the key stored under `service`.
    init(service: String = "dev.deskhand.app.device-key") {
        self.service = service
    }

    func deviceSecret() throws -> Data {
        if let existing = try read() {
            return existing
        }
        let secret = newDeviceSecret()
        var attributes = baseQuery()
        attributes[kSecValueData as String] = secret
        attributes[kSecAttrAccessible as String] = kSecAttrAccessibleWhenUnlockedThisDeviceOnly
        attributes[kSecAttrSynchronizable as String] = false
        let status = SecItemAdd(attributes as CFDictionary, nil)
        if status == errSecDuplicateItem, let raced = try read() {
            return raced
        }
        guard status == errSecSuccess else {
            throw ApiError.Key(reason: "the Keychain refused to store the device key: \(describe(status))")
        }
        return secret
    }

    private func baseQuery() -> [String: Any] {
        [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
        ]
    }

    private func read() throws -> Data? {
        var query = baseQuery()
        query[kSecReturnData as String] = true
        query[kSecMatchLimit as String] = kSecMatchLimitOne
        var item: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &item)
        switch status {
        case errSecSuccess:
            guard let data = item as? Data else {
                throw ApiError.Key(reason: "the Keychain returned no data for the device key")
            }
            return data
        case errSecItemNotFound:
            return nil
        case errSecInteractionNotAllowed:
            throw ApiError.Key(reason: "the device is locked: the device key can be read only while it is unlocked")
        default:
            throw ApiError.Key(reason: "the Keychain could not read the device key: \(describe(status))")
        }
    }

    private func describe(_ status: OSStatus) -> String {
        (SecCopyErrorMessageString(status, nil) as String?) ?? "OSStatus \(status)"
    }
}
