import DeskhandKit
import SwiftUI
import UIKit
import UniformTypeIdentifiers

/// One task: its live status and progress, its result, the approvals it waits for, and every blob
/// it named (screenshots shown, any file exported with the system's file exporter).
struct TaskScreen: View {
    @StateObject private var live: Live<TaskModel, TaskState>
    @State private var exporting: BlobDocument? = nil
    @State private var exportName = ""

    init(models: PhoneModels, taskId: String) {
        _live = StateObject(wrappedValue: models.task(taskId))
    }

    var body: some View {
        let state = live.state
        List {
            if let task = state.task {
                Section {
                    Text(task.prompt).font(.headline)
                    LabeledContent("Status", value: statusText(task.status))
                    if !state.finished {
                        Button("Cancel task", role: .destructive) {
                            Task { await live.model.cancel() }
                        }
                        .disabled(task.cancelRequestedBy != nil)
                    }
                }
                if !state.waitingApprovals.isEmpty {
                    Section("Waiting for approval") {
                        ForEach(state.waitingApprovals, id: \.id) { request in
                            Text(request.summary)
                        }
                        Text("Decide in the Approvals tab.").font(.footnote).foregroundStyle(.secondary)
                    }
                }
                Section("Progress") {
                    ForEach(Array(task.events.enumerated()), id: \.offset) { _, event in
                        VStack(alignment: .leading, spacing: 2) {
                            Text(event.kind).font(.caption).foregroundStyle(.secondary)
                            Text(event.text).font(.system(.footnote, design: .monospaced))
                        }
                    }
                }
                if let result = task.result {
                    Section("Result") {
                        Text(result.summary)
                    }
                }
                if !state.blobs.isEmpty {
                    Section("Files") {
                        ForEach(state.blobs) { blob in
                            BlobRow(blob: blob,
                                    fetch: { Task { await live.model.fetchBlob(blob.info.hash) } },
                                    export: { data in
                                        exportName = blob.info.name ?? "deskhand-\(blob.info.hash.prefix(12))"
                                        exporting = BlobDocument(data: data)
                                    })
                        }
                    }
                }
            } else {
                Text("This task has not reached the phone yet.").foregroundStyle(.secondary)
            }
            if let error = state.error {
                Text(error).foregroundStyle(.red).onTapGesture { live.model.dismissError() }
            }
        }
        .navigationTitle("Task")
        .fileExporter(
            isPresented: Binding(get: { exporting != nil }, set: { if !$0 { exporting = nil } }),
            document: exporting,
            contentType: .data,
            defaultFilename: exportName
        ) { _ in
            exporting = nil
        }
    }

    private func statusText(_ status: TaskStatus) -> String {
        switch status {
        case .queued: return "queued"
        case .running: return "running"
        case .waitingApproval: return "waiting for approval"
        case .done: return "done"
        case .failed: return "failed"
        case .cancelled: return "cancelled"
        case .interrupted: return "interrupted (the desktop restarted)"
        }
    }
}

/// A blob: its name and size; fetched on demand, an image shown, anything exported.
struct BlobRow: View {
    let blob: TaskBlob
    let fetch: () -> Void
    let export: (Data) -> Void

    var body: some View {
        VStack(alignment: .leading, spacing: 6) {
            HStack {
                Text(blob.info.name ?? blob.info.mediaType)
                Spacer()
                Text(ByteCountFormatter.string(fromByteCount: Int64(clamping: blob.info.size), countStyle: .file))
                    .foregroundStyle(.secondary)
            }
            switch blob.state {
            case .notFetched:
                Button(blob.info.mediaType.hasPrefix("image/") ? "Show" : "Download", action: fetch)
            case .fetching:
                ProgressView()
            case let .fetched(data):
                if blob.info.mediaType.hasPrefix("image/"), let image = UIImage(data: data) {
                    Image(uiImage: image)
                        .resizable()
                        .scaledToFit()
                        .clipShape(RoundedRectangle(cornerRadius: 8))
                }
                Button("Export…") { export(data) }
            case let .failed(message):
                Text(message).foregroundStyle(.red)
                Button("Try again", action: fetch)
            }
        }
        .buttonStyle(.borderless)
    }
}

/// A fetched blob as a document for `.fileExporter`: plain data under the name the desktop gave
/// it (which carries its extension).
struct BlobDocument: FileDocument {
    static var readableContentTypes: [UTType] { [.data] }

    let data: Data

    init(data: Data) {
        self.data = data
    }

    init(configuration: ReadConfiguration) throws {
        data = configuration.file.regularFileContents ?? Data()
    }

    func fileWrapper(configuration: WriteConfiguration) throws -> FileWrapper {
        FileWrapper(regularFileWithContents: data)
    }
}
