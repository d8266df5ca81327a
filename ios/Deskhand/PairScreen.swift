import AVFoundation
import DeskhandKit
import SwiftUI
import UIKit

/// Pairs with a desktop: scan the QR code `deskhand serve` shows, or paste its text.
struct PairScreen: View {
    @ObservedObject var pairing: Live<PairingModel, PairingState>
    /// Called once paired (the app then asks for permission to notify).
    var onPaired: () -> Void

    @State private var code = ""
    @State private var scanning = false
    @State private var camera = AVCaptureDevice.authorizationStatus(for: .video)

    var body: some View {
        NavigationStack {
            Form {
                Section {
                    Text("On the desktop, run `deskhand pair` (or `deskhand serve` the first time) and scan the QR code it shows.")
                        .font(.callout)
                    scanButton
                }
                Section("Or paste the code") {
                    TextField("deskhand://pair?…", text: $code, axis: .vertical)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                        .font(.system(.footnote, design: .monospaced))
                    PasteButton(payloadType: String.self) { strings in
                        if let first = strings.first {
                            code = first
                        }
                    }
                    Button("Pair") { pair(code) }
                        .disabled(code.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty || pairing.state.pairing)
                }
                if pairing.state.pairing {
                    Section { ProgressView("Pairing…") }
                }
                if pairing.state.paired && !pairing.state.ready {
                    Section {
                        Label("Paired with \(pairing.state.desktopName ?? "the desktop"); waiting for its workspace…",
                              systemImage: "hourglass")
                    }
                }
                if let error = pairing.state.error {
                    Section {
                        Label(error, systemImage: "exclamationmark.triangle").foregroundStyle(.red)
                    }
                }
            }
            .navigationTitle("Pair with a desktop")
            .sheet(isPresented: $scanning) {
                NavigationStack {
                    QRScannerView { scanned in
                        scanning = false
                        code = scanned
                        pair(scanned)
                    }
                    .ignoresSafeArea()
                    .navigationTitle("Scan the QR code")
                    .navigationBarTitleDisplayMode(.inline)
                    .toolbar {
                        ToolbarItem(placement: .cancellationAction) {
                            Button("Cancel") { scanning = false }
                        }
                    }
                }
            }
        }
    }

    @ViewBuilder
    private var scanButton: some View {
        switch camera {
        case .denied, .restricted:
            Text("Camera access is off for Deskhand: allow it in Settings, or paste the code below.")
                .foregroundStyle(.secondary)
            Button("Open Settings") {
                if let url = URL(string: UIApplication.openSettingsURLString) {
                    UIApplication.shared.open(url)
                }
            }
        default:
            Button {
                Task {
                    if camera == .notDetermined {
                        _ = await AVCaptureDevice.requestAccess(for: .video)
                        camera = AVCaptureDevice.authorizationStatus(for: .video)
                    }
                    scanning = camera == .authorized
                }
            } label: {
                Label("Scan the QR code", systemImage: "qrcode.viewfinder")
            }
            .disabled(pairing.state.pairing)
        }
    }

    private func pair(_ text: String) {
        Task {
            if await pairing.model.pair(text) != nil {
                onPaired()
            }
        }
    }
}

/// The camera with a QR code reader (AVFoundation's metadata output for `.qr`). Calls `onCode`
/// once, with the first code whose text starts with `deskhand://`.
struct QRScannerView: UIViewControllerRepresentable {
    var onCode: (String) -> Void

    func makeUIViewController(context: Context) -> ScannerController {
        let controller = ScannerController()
        controller.onCode = onCode
        return controller
    }

    func updateUIViewController(_ controller: ScannerController, context: Context) {
        controller.onCode = onCode
    }

    static func dismantleUIViewController(_ controller: ScannerController, coordinator: ()) {
        controller.stop()
    }
}

/// The capture session behind `QRScannerView`.
final class ScannerController: UIViewController, AVCaptureMetadataOutputObjectsDelegate {
    var onCode: ((String) -> Void)?
    private let session = AVCaptureSession()
    private let sessionQueue = DispatchQueue(label: "dev.deskhand.app.camera")
    private var preview: AVCaptureVideoPreviewLayer?
    private var delivered = false

    override func viewDidLoad() {
        super.viewDidLoad()
        view.backgroundColor = .black
        guard let device = AVCaptureDevice.default(for: .video),
              let input = try? AVCaptureDeviceInput(device: device),
              session.canAddInput(input)
        else {
            showProblem("No camera is available: paste the code instead.")
            return
        }
        session.addInput(input)
        let output = AVCaptureMetadataOutput()
        guard session.canAddOutput(output) else {
            showProblem("The camera cannot read QR codes here: paste the code instead.")
            return
        }
        session.addOutput(output)
        output.setMetadataObjectsDelegate(self, queue: .main)
        output.metadataObjectTypes = [.qr]
        let preview = AVCaptureVideoPreviewLayer(session: session)
        preview.videoGravity = .resizeAspectFill
        view.layer.addSublayer(preview)
        self.preview = preview
        let running = session
        // startRunning blocks until the camera runs: off the main thread.
        sessionQueue.async { running.startRunning() }
    }

    override func viewDidLayoutSubviews() {
        super.viewDidLayoutSubviews()
        preview?.frame = view.bounds
    }

    func stop() {
        let session = self.session
        sessionQueue.async { session.stopRunning() }
    }

    // AVFoundation's delegate protocol is not isolated: take the texts out here, deliver on main.
    nonisolated func metadataOutput(_ output: AVCaptureMetadataOutput, didOutput metadataObjects: [AVMetadataObject],
                                    from connection: AVCaptureConnection)
    {
        let texts = metadataObjects.compactMap { object -> String? in
            guard let code = object as? AVMetadataMachineReadableCodeObject, code.type == .qr else { return nil }
            return code.stringValue
        }
        Task { @MainActor [weak self] in self?.deliver(texts) }
    }

    private func deliver(_ texts: [String]) {
        guard !delivered, let text = texts.first(where: { $0.hasPrefix("deskhand://") }) else { return }
        delivered = true
        stop()
        onCode?(text)
    }

    private func showProblem(_ text: String) {
        let label = UILabel()
        label.text = text
        label.textColor = .white
        label.numberOfLines = 0
        label.textAlignment = .center
        label.translatesAutoresizingMaskIntoConstraints = false
        view.addSubview(label)
        NSLayoutConstraint.activate([
            label.centerYAnchor.constraint(equalTo: view.centerYAnchor),
            label.leadingAnchor.constraint(equalTo: view.leadingAnchor, constant: 24),
            label.trailingAnchor.constraint(equalTo: view.trailingAnchor, constant: -24),
        ])
    }
}
