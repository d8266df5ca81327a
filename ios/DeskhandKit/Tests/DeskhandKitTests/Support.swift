// What the view-model tests share: a real `deskhand serve` on loopback, a file-backed key
// provider, and waits that fail naming what they waited for.
import DeskhandKit
import DeskhandMobile
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How long a wait may take before the test fails (ns): 30 s.
let waitNs: UInt64 = 30_000_000_000

struct TimedOut: Error, CustomStringConvertible {
    let description: String
}

/// What a wait saw: the last value, and whether it satisfied the predicate.
@MainActor
final class Seen<T> {
    var last: T?
    var found = false
}

/// Waits until a value of `values` satisfies `pred`; fails naming `what` and the last value
/// otherwise.
@MainActor
func until<T>(
    _ what: String, _ values: AsyncStream<T>, file: StaticString = #filePath, line: UInt = #line,
    _ pred: @escaping (T) -> Bool
) async throws -> T {
    let seen = Seen<T>()
    // The waiting task returns nothing (a task's result must be Sendable; the states are not
    // declared so): what it saw stays in `seen`, on the main actor.
    let waiter = Task { @MainActor in
        for await value in values {
            seen.last = value
            if pred(value) {
                seen.found = true
                return
            }
        }
    }
    let timer = Task {
        try await Task.sleep(nanoseconds: waitNs)
        waiter.cancel()
    }
    await waiter.value
    timer.cancel()
    guard seen.found, let found = seen.last else {
        let message = "timed out after \(waitNs / 1_000_000) ms waiting for \(what); last state: "
            + (seen.last.map { String(describing: $0) } ?? "none")
        XCTFail(message, file: file, line: line)
        throw TimedOut(description: message)
    }
    return found
}

/// `value`, or a failed test saying `what` when it is nil.
func need<T>(_ value: T?, _ what: String, file: StaticString = #filePath, line: UInt = #line)
    throws -> T
{
    guard let value else {
        XCTFail("expected \(what), got nil", file: file, line: line)
        throw TimedOut(description: "expected \(what)")
    }
    return value
}

/// What the app's Keychain-backed provider does: create the secret once, hand it back after.
final class FileKeys: KeyProvider {
    let url: URL

    init(_ url: URL) {
        self.url = url
    }

    func deviceSecret() throws -> Data {
        do {
            if !FileManager.default.fileExists(atPath: url.path) {
                try newDeviceSecret().write(to: url)
            }
            return try Data(contentsOf: url)
        } catch {
            throw ApiError.Key(reason: "test key file \(url.path): \(error)")
        }
    }
}

/// A free UDP port on loopback (the desktop listens on QUIC, so UDP), chosen by the kernel.
func freeUdpPort() throws -> UInt16 {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_DGRAM, 0)
    #endif
    guard fd >= 0 else { throw TimedOut(description: "socket() failed: errno \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var size = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) }
    }
    guard bound == 0 else { throw TimedOut(description: "bind() failed: errno \(errno)") }
    let named = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) }
    }
    guard named == 0 else { throw TimedOut(description: "getsockname() failed: errno \(errno)") }
    return UInt16(bigEndian: addr.sin_port)
}

/// A `deskhand serve` (from `DESKHAND_BIN`) with its own HOME and data directory on a fixed
/// loopback port, relays and mDNS off.
final class Desktop {
    let root: URL
    let home: URL
    private let data: URL
    private let config: URL
    private let port: UInt16
    private var process: Process?

    init(root: URL) throws {
        self.root = root
        home = root.appendingPathComponent("home")
        data = root.appendingPathComponent("desk")
        let etc = root.appendingPathComponent("etc")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: etc, withIntermediateDirectories: true)
        config = etc.appendingPathComponent("desk.toml")
        try "roots = [\"\(home.path)\"]\n".write(to: config, atomically: true, encoding: .utf8)
        port = try freeUdpPort()
    }

    /// Starts it (again, on the same data and port); its pairing code.
    func start() throws -> String {
        let bin = ProcessInfo.processInfo.environment["DESKHAND_BIN"] ?? "target/debug/deskhand"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = [
            "serve", "--data", data.path, "--listen", "127.0.0.1:\(port)", "--relay", "off",
            "--mdns", "off", "--name", "vm-desktop", "--config", config.path,
        ]
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = home.path
        env["XDG_CONFIG_HOME"] = home.appendingPathComponent(".config").path
        env["XDG_DATA_HOME"] = home.appendingPathComponent(".local/share").path
        env["DESKHAND_LOG"] = "warn"
        env["DISPLAY"] = nil
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        process = p
        let out = pipe.fileHandleForReading
        var seen = ""
        var buffer = Data()
        while true {
            let chunk = out.availableData
            if chunk.isEmpty {
                throw TimedOut(description: "deskhand serve (\(bin)) exited:\n\(seen)")
            }
            buffer.append(chunk)
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                seen += line + "\n"
                let prefix = "pairing payload: "
                if line.hasPrefix(prefix) {
                    // Keep draining its output so that it never blocks on a full pipe.
                    DispatchQueue.global().async {
                        while !out.availableData.isEmpty {}
                    }
                    return String(line.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces)
                }
            }
        }
    }

    /// Stops it as a user would (SIGTERM), killing it if it does not end in 15 s.
    func stop() {
        guard let p = process else { return }
        process = nil
        guard p.isRunning else { return }
        p.terminate()
        let deadline = Date().addingTimeInterval(15)
        while p.isRunning && Date() < deadline {
            usleep(50_000)
        }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
        }
        p.waitUntilExit()
    }
}

/// One test's world: a temporary directory, a running desktop and a phone session on loopback.
@MainActor
final class Fixture {
    let root: URL
    let desk: Desktop
    let payload: String
    let session: PhoneSession
    private var others: [PhoneSession] = []

    private init(root: URL, desk: Desktop, payload: String, session: PhoneSession) {
        self.root = root
        self.desk = desk
        self.payload = payload
        self.session = session
    }

    /// Settings of a phone named `name` with its data under the fixture's directory.
    nonisolated static func settings(root: URL, name: String) -> PhoneSettings {
        PhoneSettings(
            dataDir: root.appendingPathComponent(name).path, deviceName: "vm-\(name)",
            platform: "ios", listen: "127.0.0.1:0", relay: "off", mdns: false)
    }

    /// Runs `body` with a fresh fixture, and tears it down whatever happens.
    static func with(_ body: (Fixture) async throws -> Void) async throws {
        initPlatform(filter: "warn", sink: nil)
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("deskhand-vm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let desk = try Desktop(root: root)
        do {
            let payload = try desk.start()
            let session = try await PhoneSession.open(
                settings: settings(root: root, name: "phone"),
                keyProvider: FileKeys(root.appendingPathComponent("phone.key")))
            let fixture = Fixture(root: root, desk: desk, payload: payload, session: session)
            do {
                try await body(fixture)
            } catch {
                await fixture.close()
                throw error
            }
            await fixture.close()
        } catch {
            desk.stop()
            try? FileManager.default.removeItem(at: root)
            throw error
        }
    }

    /// A second phone with its own data and key (closed with the fixture).
    func otherPhone(_ name: String) async throws -> PhoneSession {
        let other = try await PhoneSession.open(
            settings: Fixture.settings(root: root, name: name),
            keyProvider: FileKeys(root.appendingPathComponent("\(name).key")))
        others.append(other)
        return other
    }

    /// Pairs through the pairing model, as the pair screen does with a scanned code.
    @discardableResult
    func pair() async throws -> PairingModel {
        let pairing = PairingModel(session: session)
        let name = await pairing.pair(payload)
        XCTAssertEqual(name, "vm-desktop", "pairing failed: \(pairing.error ?? "no error")")
        _ = try await until("the workspace received", pairing.states()) { $0.ready }
        return pairing
    }

    private func close() async {
        for other in others {
            await other.close()
        }
        others = []
        await session.close()
        desk.stop()
        try? FileManager.default.removeItem(at: root)
    }
}
