import Combine
import DeskhandKit
import Foundation

/// A DeskhandKit model for SwiftUI: the model, and its state republished as `@Published` from the
/// model's `AsyncStream` of states (DeskhandKit itself has no Combine, so that it builds on Linux).
@MainActor
final class Live<Model, State>: ObservableObject {
    /// The model: call its actions.
    let model: Model
    /// Its state, as the view shows it.
    @Published private(set) var state: State
    private var pump: Task<Void, Never>?

    init(_ model: Model, state: State, updates: AsyncStream<State>) {
        self.model = model
        self.state = state
        pump = Task { [weak self] in
            for await next in updates {
                guard let self else { return }
                self.state = next
            }
        }
    }

    deinit {
        pump?.cancel()
    }
}

extension Live where Model: StateModel, State == Model.State {
    /// `model`, with its state republished.
    convenience init(_ model: Model) {
        self.init(model, state: model.state, updates: model.states())
    }
}
