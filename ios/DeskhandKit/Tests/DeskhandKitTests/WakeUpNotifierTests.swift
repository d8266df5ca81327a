// The notifier's rules on hand-made snapshots (no desktop, no library call): what a background
// refresh notifies, and that nothing is notified twice.
import DeskhandKit
import DeskhandMobile
import XCTest

final class WakeUpNotifierTests: XCTestCase {
    private func approval(_ id: String, risk: Risk = .medium, state: ApprovalState = .pending,
                          mine: Verdict? = nil, expiresInMs: Int64 = 60_000) -> ApprovalView
    {
        ApprovalView(
            id: id, taskId: "t-\(id)", tool: "trash", args: "{\"path\":\"~/a\"}", summary: "trash ~/a",
            risk: risk, requestedAtMs: 1_000, expiresAtMs: 61_000, state: state, myVerdict: mine,
            tooLate: false, expiresInMs: expiresInMs, verified: true)
    }

    private func task(_ id: String, _ status: TaskStatus, mine: Bool = true, result: String? = nil) -> TaskView {
        TaskView(
            id: id, prompt: "list ~", createdBy: "phone", createdAtMs: 1_000, receivedAtMs: 1_001,
            status: status, startedAtMs: nil, finishedAtMs: nil, cancelRequestedBy: nil, events: [],
            result: result.map { TaskResultView(summary: $0, blobs: []) }, mine: mine, waitingFor: [])
    }

    private func snapshot(pending: [ApprovalView] = [], resolved: [ApprovalView] = [],
                          tasks: [TaskView] = []) -> PhoneSnapshot
    {
        PhoneSnapshot(
            deviceId: "phone", deviceName: "phone", syncing: false, workspaceId: "w",
            workspaceReceived: true, desktop: nil, messages: [], tasks: tasks,
            pendingApprovals: pending, resolvedApprovals: resolved, devices: [], olderWeeks: 0,
            takenAtMs: 2_000,
            desktopNowMs: 2_000)
    }

    func testNotifiesNewRequestsAndFinishedTasksOnce() {
        let first = snapshot(
            pending: [approval("a1"), approval("a2", risk: .high)],
            tasks: [task("t1", .done, result: "3 files"), task("t2", .running), task("t3", .failed, mine: false)])
        let (notes, memory) = WakeUpNotifier.notes(for: first, memory: WakeUpMemory())
        XCTAssertEqual(notes.map(\.identifier), ["deskhand.approval.a1", "deskhand.approval.a2", "deskhand.task.t1"])
        XCTAssertEqual(notes[1].title, "High-risk approval needed")
        XCTAssertEqual(notes[2].kind, .taskFinished(.done))
        XCTAssertEqual(notes[2].body, "3 files")

        // The same state again: nothing.
        XCTAssertEqual(WakeUpNotifier.notes(for: first, memory: memory).notes, [])

        // The running task ends and a third request comes: only those.
        let second = snapshot(
            pending: [approval("a2", risk: .high), approval("a3")],
            resolved: [approval("a1", state: .expired)],
            tasks: [task("t1", .done), task("t2", .cancelled), task("t3", .failed, mine: false)])
        let (later, kept) = WakeUpNotifier.notes(for: second, memory: memory)
        XCTAssertEqual(later.map(\.identifier), ["deskhand.approval.a3", "deskhand.task.t2"])
        XCTAssertEqual(later[1].title, "Task cancelled")
        XCTAssertEqual(later[1].body, "list ~", "without a result, the prompt")
        XCTAssertEqual(kept.approvals, ["a1", "a2", "a3"])
        XCTAssertEqual(kept.finishedTasks, ["t1", "t2"])
    }

    func testLeavesOutWhatNeedsNoDecisionAndWhatWasSeen() {
        let s = snapshot(pending: [
            approval("decided", mine: .approve),
            approval("late", expiresInMs: -1),
            approval("expired", state: .expired),
        ], tasks: [task("seen", .done)])
        XCTAssertEqual(WakeUpNotifier.notes(for: s, memory: WakeUpMemory()).notes.map(\.identifier),
                       ["deskhand.task.seen"])

        // What the app showed in the foreground is never notified afterwards.
        let seen = WakeUpNotifier.seen(
            snapshot(pending: [approval("open")], tasks: [task("seen", .done)]), memory: WakeUpMemory())
        let after = snapshot(pending: [approval("open")], tasks: [task("seen", .done), task("new", .interrupted)])
        XCTAssertEqual(WakeUpNotifier.notes(for: after, memory: seen).notes.map(\.identifier), ["deskhand.task.new"])

        // Forgotten once gone from the workspace (the memory stays bounded).
        let empty = WakeUpNotifier.notes(for: snapshot(), memory: seen).memory
        XCTAssertEqual(empty, WakeUpMemory())
    }
}
