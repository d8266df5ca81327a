// The iOS app's view models (Sources/DeskhandKit) through the real generated Swift bindings and the
// real library, against a real `deskhand serve` (DESKHAND_BIN) on loopback with relays and mDNS
// off: what the SwiftUI screens drive. The Swift twin of
// tests/bindings/kotlin/viewmodels/ViewModelsTest.kt. Run with `swift test` (see ios/README.md).
import DeskhandKit
import DeskhandMobile
import Foundation
import XCTest

final class ViewModelsTests: XCTestCase {
    @MainActor
    func testPairsFromAPastedCodeAndShowsTheCoresRefusals() async throws {
        try await Fixture.with { f in
            let pairing = PairingModel(session: f.session)
            let devices = DevicesModel(session: f.session)
            XCTAssertFalse(pairing.state.paired)
            XCTAssertEqual(devices.state.presence, .notPaired)

            // Sending before pairing: the core's refusal, nothing written.
            let conversation = ConversationModel(session: f.session)
            let early = await conversation.send("too early")
            XCTAssertNil(early)
            XCTAssertEqual(conversation.error, "this phone is not paired with a desktop")

            // A mangled code: the core's own message (not the binding's debug form), still unpaired.
            let mangled = await pairing.pair("deskhand://pair?v=1&id=nonsense")
            XCTAssertNil(mangled)
            let refusal = try await until("the refusal shown", pairing.states()) { $0.error != nil }
            let words = refusal.error ?? ""
            XCTAssertFalse(words.isEmpty || words.hasPrefix("Invalid(") || words.contains("reason:"),
                           "error shown: \(words)")
            XCTAssertFalse(refusal.paired)

            // The real code, pasted with the whitespace a paste leaves around it.
            let name = await pairing.pair("  \(f.payload)\n")
            XCTAssertEqual(name, "vm-desktop")
            let paired = try await until("paired and ready", pairing.states()) { $0.paired && $0.ready }
            XCTAssertEqual(paired.desktopName, "vm-desktop")
            XCTAssertNil(paired.error, "a success clears the error")
            let online = try await until("the desktop online on the devices screen", devices.states()) {
                $0.presence.isOnline
            }
            XCTAssertEqual(online.deviceId, f.session.deviceId)
            XCTAssertEqual(online.desktopName, "vm-desktop")
            // The devices paired with the desktop: this phone, as the desktop registered it.
            let listed = try await until("this phone among the paired devices", devices.states()) {
                !$0.pairedDevices.isEmpty
            }
            XCTAssertEqual(listed.pairedDevices.map(\.id), [f.session.deviceId])
            XCTAssertEqual(listed.pairedDevices.map(\.thisDevice), [true])
            XCTAssertNil(listed.pairedDevices[0].revokedAtMs)

            // The same code a second time: the desktop refuses (single use), said in its words.
            let other = try await f.otherPhone("phone2")
            let second = PairingModel(session: other)
            let again = await second.pair(f.payload)
            XCTAssertNil(again)
            let used = second.error ?? ""
            XCTAssertTrue(used.contains("already used"), "reused code refused with: \(used)")
            XCTAssertFalse(second.state.paired)
        }
    }

    @MainActor
    func testSendsAMessageAndSeesTheDesktopsReply() async throws {
        try await Fixture.with { f in
            try await f.pair()
            let conversation = ConversationModel(session: f.session)
            let healthy = try await until("the desktop online and healthy", conversation.states()) {
                $0.presence.isOnline && $0.health != nil && $0.canSend
            }
            XCTAssertEqual(healthy.health?.stale, false)

            let blank = await conversation.send("   ")
            XCTAssertNil(blank, "blank text is refused")
            XCTAssertFalse((conversation.error ?? "").isEmpty)
            XCTAssertTrue(f.session.snapshot.messages.allSatisfy { !$0.mine }, "nothing was written")

            let id = try need(await conversation.send("list ~"), "a message id")
            XCTAssertNil(conversation.error)
            let shown = try await until("the message shown", conversation.states()) { s in
                s.messages.contains { $0.id == id }
            }
            let mine = try need(shown.messages.first { $0.id == id }, "the message")
            XCTAssertTrue(mine.mine && mine.role == .user && mine.text == "list ~")
            let tid = conversation.taskId(ofMessage: id)
            let done = try await until("the agent's reply and the message delivered", conversation.states()) { s in
                s.messages.contains { $0.taskId == tid && $0.role == .agent }
                    && s.messages.first { $0.id == id }?.delivery == .synced
            }
            let reply = try need(done.messages.first { $0.taskId == tid && $0.role == .agent }, "the reply")
            XCTAssertTrue(reply.text.hasPrefix("~:"), "reply: \(reply.text)")
            XCTAssertFalse(reply.mine)

            let task = TaskModel(session: f.session, taskId: tid)
            let state = try await until("the task done with its progress", task.states()) { $0.finished }
            XCTAssertEqual(state.task?.status, .done)
            XCTAssertFalse(state.task?.events.isEmpty ?? true)
            XCTAssertEqual(state.task?.prompt, "list ~")
        }
    }

    @MainActor
    func testApprovesFromTheListHighRiskOnlyAfterConfirmation() async throws {
        try await Fixture.with { f in
            try await f.pair()
            let conversation = ConversationModel(session: f.session)
            let approvals = ApprovalsModel(session: f.session)

            // Medium risk: approved straight from the list.
            let target = f.desk.home.appendingPathComponent("file.txt")
            try "bye\n".write(to: target, atomically: true, encoding: .utf8)
            let trash = conversation.taskId(
                ofMessage: try need(await conversation.send("trash ~/file.txt"), "a message id"))
            let listed = try await until("the trash request in the list", approvals.states()) { s in
                s.pending.contains { $0.request.taskId == trash }
            }
            let item = try need(listed.pending.first { $0.request.taskId == trash }, "the request")
            XCTAssertEqual(item.request.tool, "trash")
            XCTAssertTrue(item.request.args.contains("file.txt"), "the exact action: \(item.request.args)")
            XCTAssertEqual(item.risk, .medium)
            XCTAssertFalse(item.needsBiometric)
            XCTAssertTrue(item.canApprove)
            XCTAssertTrue(FileManager.default.fileExists(atPath: target.path),
                          "nothing may happen before the approval")
            let approved = await approvals.approve(item.id)
            XCTAssertEqual(approved, true)
            _ = try await until("the trash task done", TaskModel(session: f.session, taskId: trash).states()) {
                $0.task?.status == .done
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: target.path), "the approved trash did not happen")
            let after = try await until("the request resolved", approvals.states()) { s in
                !s.pending.contains { $0.id == item.id } && s.resolved.contains { $0.id == item.id }
            }
            XCTAssertEqual(after.resolved.first { $0.id == item.id }?.myVerdict, .approve)

            // High risk: refused without the confirmation, run after it; its output is a blob.
            let run = conversation.taskId(
                ofMessage: try need(await conversation.send("run seq 1 20000"), "a message id"))
            let highListed = try await until("the run request in the list", approvals.states()) { s in
                s.pending.contains { $0.request.taskId == run }
            }
            let high = try need(highListed.pending.first { $0.request.taskId == run }, "the request")
            XCTAssertEqual(high.risk, .high)
            XCTAssertTrue(high.needsBiometric)
            let refused = await approvals.approve(high.id)
            XCTAssertEqual(refused, false)
            XCTAssertEqual(approvals.error, ApprovalsModel.biometricNeeded)
            XCTAssertNil(f.session.snapshot.pendingApprovals.first { $0.id == high.id }?.myVerdict)
            XCTAssertNil(try f.session.phone.snapshot().pendingApprovals.first { $0.id == high.id }?.myVerdict,
                         "nothing was signed")
            let task = TaskModel(session: f.session, taskId: run)
            let waiting = try await until("the run waiting for its approval", task.states()) {
                !$0.waitingApprovals.isEmpty
            }
            XCTAssertEqual(waiting.task?.status, .waitingApproval)
            XCTAssertEqual(waiting.waitingApprovals.map(\.id), [high.id])
            let confirmed = await approvals.approve(high.id, biometricConfirmed: true)
            XCTAssertEqual(confirmed, true)
            XCTAssertNil(approvals.error)
            let done = try await until("the run's result with its blob", task.states()) {
                $0.finished && !$0.blobs.isEmpty
            }
            XCTAssertEqual(done.task?.status, .done)
            let blob = done.blobs[0]
            XCTAssertEqual(blob.state, .notFetched)
            let bytes = try need(await task.fetchBlob(blob.info.hash), "the blob (\(task.error ?? ""))")
            let expected = Data((1...20000).map { "\($0)\n" }.joined().utf8)
            XCTAssertEqual(bytes, expected, "blob of \(bytes.count) bytes differs")
            let shown = try await until("the blob shown as fetched", task.states()) {
                if case .fetched = $0.blobs.first?.state { return true }
                return false
            }
            if case let .fetched(data) = shown.blobs[0].state {
                XCTAssertEqual(UInt64(data.count), blob.info.size)
            }
            let bad = await task.fetchBlob("not-a-hash")
            XCTAssertNil(bad)
            guard case .failed = task.blobStates["not-a-hash"] else {
                return XCTFail("a bad hash's fetch is not shown as failed: \(String(describing: task.blobStates["not-a-hash"]))")
            }

            // Deciding again on a resolved request: the core's refusal.
            let late = await approvals.deny(item.id)
            XCTAssertNil(late)
            XCTAssertFalse((approvals.error ?? "").isEmpty)
        }
    }

    @MainActor
    func testPresenceGoesOfflineAndBackAndAMessageWrittenMeanwhileIsDelivered() async throws {
        try await Fixture.with { f in
            try await f.pair()
            let session = f.session
            let conversation = ConversationModel(session: session)
            let devices = DevicesModel(session: session)
            _ = try await until("online", conversation.states()) { $0.presence.isOnline }

            f.desk.stop()
            let offline = try await until("presence offline after the desktop stopped", conversation.states()) {
                if case .offline = $0.presence { return true }
                return false
            }
            XCTAssertFalse(offline.inSync)

            let id = try need(await conversation.send("help"), "writing offline (\(conversation.error ?? ""))")
            let pending = try await until("the offline message shown", conversation.states()) { s in
                s.messages.contains { $0.id == id }
            }
            XCTAssertEqual(pending.messages.first { $0.id == id }?.delivery, .pending)
            _ = try await until("the unsent count", devices.states()) { $0.unsent >= 1 }
            // Forgetting now would lose the message: the core refuses and says so.
            let forgot = await devices.forgetDesktop()
            XCTAssertNil(forgot)
            XCTAssertFalse((devices.error ?? "").isEmpty, "forget refused with a reason")
            XCTAssertEqual(session.snapshot.desktop?.name, "vm-desktop", "still paired")

            _ = try f.desk.start()
            session.onForeground()
            let tid = conversation.taskId(ofMessage: id)
            let back = try await until("online again, the message delivered and answered", conversation.states()) { s in
                s.presence.isOnline
                    && s.messages.first { $0.id == id }?.delivery == .synced
                    && s.messages.contains { $0.taskId == tid && $0.role == .agent }
            }
            let answer = back.messages.first { $0.taskId == tid && $0.role == .agent }?.text ?? ""
            XCTAssertTrue(answer.hasPrefix("Commands"), "answer: \(answer)")
            _ = try await until("nothing unsent", devices.states()) { $0.unsent == 0 }

            // In the background nothing is sent; coming to the foreground syncs before its task ends.
            session.onBackground()
            _ = try await until("offline in the background", conversation.states()) { !$0.presence.isOnline }
            let later = try need(await conversation.send("list ~"), "writing in the background")
            let shown = try await until("the background message shown", session.snapshots.values()) { s in
                s.messages.contains { $0.id == later }
            }
            XCTAssertEqual(shown.messages.first { $0.id == later }?.delivery, .pending)
            await session.onForeground().value
            // The core's state right after the sync (the listener's copy may follow a moment later).
            XCTAssertEqual(try session.phone.snapshot().messages.first { $0.id == later }?.delivery, .synced,
                           "onForeground's sync ended with the message still pending")

            // A network change reconnects too (after a stop, as when the app was in the background).
            session.onBackground()
            _ = try await until("offline while stopped", conversation.states()) { !$0.presence.isOnline }
            session.onNetworkChanged()
            _ = try await until("online after the network change", conversation.states()) { $0.presence.isOnline }
            _ = try await until("nothing unsent before forgetting", devices.states()) { $0.unsent == 0 }

            // With nothing unsent, forgetting works.
            let forgotten = await devices.forgetDesktop()
            XCTAssertEqual(forgotten, true, "forget: \(devices.error ?? "")")
            _ = try await until("not paired", devices.states()) { $0.presence == .notPaired }
        }
    }

    /// A background refresh as the app runs it: one sync while stopped, then the notifier's notes:
    /// a finished task of this phone and a new approval request, each once.
    @MainActor
    func testBackgroundSyncNotifiesEachFinishedTaskAndApprovalOnce() async throws {
        try await Fixture.with { f in
            try await f.pair()
            let session = f.session
            let conversation = ConversationModel(session: session)
            _ = try await until("online", conversation.states()) { $0.presence.isOnline && $0.canSend }
            // What the user saw in the app counts as seen.
            var memory = WakeUpNotifier.seen(session.snapshot, memory: WakeUpMemory())

            // Written in the background; one background sync delivers it, later ones bring the answer.
            session.onBackground()
            _ = try await until("stopped", conversation.states()) { !$0.presence.isOnline }
            let listing = conversation.taskId(ofMessage: try need(await conversation.send("list ~"), "a message id"))
            let target = f.desk.home.appendingPathComponent("note.txt")
            try "x\n".write(to: target, atomically: true, encoding: .utf8)
            let trash = conversation.taskId(ofMessage: try need(await conversation.send("trash ~/note.txt"), "a message id"))

            var notes: [WakeUpNote] = []
            let deadline = Date().addingTimeInterval(Double(waitNs) / 1e9)
            while Date() < deadline {
                let snapshot = try await session.backgroundSync()
                let (new, next) = WakeUpNotifier.notes(for: snapshot, memory: memory)
                memory = next
                notes += new
                if notes.contains(where: { $0.subjectId == listing }) && notes.contains(where: { $0.kind == .approval }) {
                    break
                }
                try await Task.sleep(nanoseconds: 200_000_000)
            }
            let finished = notes.filter { $0.subjectId == listing }
            XCTAssertEqual(finished.count, 1, "notes: \(notes)")
            XCTAssertEqual(finished.first?.kind, .taskFinished(.done))
            XCTAssertEqual(finished.first?.identifier, "deskhand.task.\(listing)")
            let asks = notes.filter { $0.kind == .approval }
            XCTAssertEqual(asks.count, 1, "notes: \(notes)")
            let current = try session.phone.snapshot()
            let request = try need(current.pendingApprovals.first { $0.taskId == trash }, "the trash request")
            XCTAssertEqual(asks.first?.subjectId, request.id)
            XCTAssertEqual(asks.first?.title, "Approval needed")

            // Nothing twice: another background sync finds nothing new.
            let again = WakeUpNotifier.notes(for: try await session.backgroundSync(), memory: memory)
            XCTAssertEqual(again.notes, [], "notified twice")
            XCTAssertFalse(try session.phone.snapshot().syncing, "a background refresh leaves syncing off")
        }
    }
}
