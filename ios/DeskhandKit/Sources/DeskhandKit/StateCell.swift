import Foundation

/// A value that changes over time, read on the main actor: the current `value`, and `values()`,
/// a stream that yields the current value at once and then every new one (the newest only, when
/// its reader is slower than the changes). The models' counterpart of Kotlin's `StateFlow`, with
/// nothing but the standard library (no Combine, no Observation), so that it builds on Linux.
@MainActor
public final class StateCell<Value> {
    /// The current value.
    public private(set) var value: Value

    private var continuations: [UInt64: AsyncStream<Value>.Continuation] = [:]
    private var observers: [UInt64: (Value) -> Bool] = [:]
    private var nextId: UInt64 = 0

    /// A cell holding `initial`.
    public init(_ initial: Value) {
        value = initial
    }

    /// Sets the value and hands it to every stream and observer.
    public func set(_ newValue: Value) {
        value = newValue
        for continuation in continuations.values {
            continuation.yield(newValue)
        }
        for (id, observer) in observers where !observer(newValue) {
            observers[id] = nil
        }
    }

    /// The current value now, then each new one, until the reading task is cancelled or drops
    /// the stream. `owner` (the model whose cell this is) is kept alive until then: a stream read
    /// from a model nobody else holds (`TaskModel(…).states()`) still sees its changes.
    public func values(keepingAlive owner: (AnyObject & Sendable)? = nil) -> AsyncStream<Value> {
        let id = takeId()
        return AsyncStream(bufferingPolicy: .bufferingNewest(1)) { continuation in
            continuation.yield(value)
            continuations[id] = continuation
            // The inner closure captures `self` weakly itself: reading the outer closure's weak
            // capture (a `var`) from the task is an error since Swift 5.10.
            continuation.onTermination = { [weak self] _ in
                withExtendedLifetime(owner) {}
                Task { @MainActor [weak self] in self?.continuations[id] = nil }
            }
        }
    }

    /// Calls `observer` with each new value, synchronously, until it returns `false`.
    public func observe(_ observer: @escaping (Value) -> Bool) {
        observers[takeId()] = observer
    }

    private func takeId() -> UInt64 {
        nextId += 1
        return nextId
    }
}

/// A screen's model: its current state and a stream of its states (what the app's `Live`
/// republishes for SwiftUI). Every screen model conforms.
@MainActor
public protocol StateModel: AnyObject {
    /// What the screen shows.
    associatedtype State
    /// The current state.
    var state: State { get }
    /// The current state at once, then every change; the stream keeps the model alive.
    func states() -> AsyncStream<State>
}

extension PairingModel: StateModel {}
extension ConversationModel: StateModel {}
extension ApprovalsModel: StateModel {}
extension DevicesModel: StateModel {}
extension TaskModel: StateModel {}
