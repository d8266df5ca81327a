//! uniffi facade over Deskhand's phone API (`deskhand_sync::Phone`), for the iOS and Android apps
//! and the binding tests.
//!
//! No logic lives here: [`DeskhandPhone`] wraps an `Arc<Phone>`, the records and enums in
//! [`types`] mirror the phone snapshot, [`ApiError`] is the small error enum an app branches on,
//! and the platform hands in its services (the device key, a log sink) as foreign traits.
//! Async calls run on a tokio runtime owned by this library.

#![deny(missing_docs)]

mod error;
mod platform;
pub mod types;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deskhand_core::TaskId;
use deskhand_core::ids::ApprovalId;
use deskhand_sync::phone::{KeyProviderError, PhoneConfig};
use deskhand_sync::{FileKeyProvider, NetConfig, Phone, Subscription};

pub use error::ApiError;
pub use platform::{LogLevel, LogSink, init_platform};
pub use types::*;

uniffi::setup_scaffolding!();

/// The library's runtime: every async call and the phone's background work run here, whatever
/// executor the app awaits them from.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("deskhand")
            .enable_all()
            .build()
            .expect("cannot start the Deskhand runtime (threads or timers unavailable)")
    })
}

async fn on_runtime<T: Send + 'static>(
    f: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    runtime().spawn(f).await?
}

/// Keeps the device key where the platform keeps secrets (Keychain, Android Keystore).
#[uniffi::export(foreign)]
pub trait KeyProvider: Send + Sync {
    /// The device's 32-byte secret: create it on first use (e.g. with `new_device_secret()`),
    /// store it securely, and return the same bytes every time after.
    fn device_secret(&self) -> Result<Vec<u8>, ApiError>;
}

/// Receives phone snapshots: the current one at once, then one after each change.
#[uniffi::export(foreign)]
pub trait PhoneListener: Send + Sync {
    /// The latest state. Calls never overlap and come from a library thread: hop to the UI
    /// thread yourself.
    fn on_update(&self, snapshot: PhoneSnapshot);
}

struct KeyBridge(Arc<dyn KeyProvider>);

impl deskhand_sync::KeyProvider for KeyBridge {
    fn device_secret(&self) -> Result<[u8; 32], KeyProviderError> {
        let bytes = self.0.device_secret().map_err(|e| KeyProviderError {
            reason: e.to_string(),
        })?;
        let n = bytes.len();
        bytes.try_into().map_err(|_| KeyProviderError {
            reason: format!("the key provider returned {n} bytes; a device secret is 32"),
        })
    }
}

struct ListenerBridge(Arc<dyn PhoneListener>);

impl deskhand_sync::PhoneListener for ListenerBridge {
    fn on_update(&self, snapshot: deskhand_sync::PhoneSnapshot) {
        self.0.on_update(snapshot.into());
    }
}

/// How to open a phone.
#[derive(Clone, Debug, uniffi::Record)]
pub struct PhoneSettings {
    /// Directory of the phone's database (app-private storage).
    pub data_dir: String,
    /// This phone's name, shown on the desktop.
    pub device_name: String,
    /// `ios`, `android`, …
    pub platform: String,
    /// Address to bind, e.g. `0.0.0.0:0` (default) or `127.0.0.1:0` (tests).
    #[uniffi(default = None)]
    pub listen: Option<String>,
    /// The phone's own relay: `off` (default), `default` (n0's public relays) or a relay URL.
    /// Whatever it is, the phone also uses the relay its desktop named when pairing.
    #[uniffi(default = None)]
    pub relay: Option<String>,
    /// Local-network discovery of the desktop (mDNS): on unless `false`.
    #[uniffi(default = None)]
    pub mdns: Option<bool>,
}

fn config(settings: PhoneSettings) -> Result<PhoneConfig, ApiError> {
    let invalid = |reason: String| ApiError::Invalid { reason };
    let listen = settings
        .listen
        .as_deref()
        .unwrap_or("0.0.0.0:0")
        .parse()
        .map_err(|e| invalid(format!("listen address: {e}")))?;
    let relay = settings
        .relay
        .as_deref()
        .unwrap_or("off")
        .parse()
        .map_err(invalid)?;
    Ok(PhoneConfig::new(
        &settings.data_dir,
        &settings.device_name,
        &settings.platform,
    )
    .with_net(
        NetConfig::default()
            .with_listen(listen)
            .with_relay(relay)
            .with_mdns(settings.mdns.unwrap_or(true)),
    ))
}

/// 32 fresh random bytes from the operating system, for a [`KeyProvider`] creating the key.
#[uniffi::export]
pub fn new_device_secret() -> Vec<u8> {
    deskhand_sync::node::random_bytes::<32>().to_vec()
}

/// Opens a phone whose device key the app keeps (Keychain, Keystore). It syncs with its desktop
/// in the background at once, if paired.
#[uniffi::export(async_runtime = "tokio")]
pub async fn open_phone(
    settings: PhoneSettings,
    key_provider: Arc<dyn KeyProvider>,
) -> Result<Arc<DeskhandPhone>, ApiError> {
    let config = config(settings)?.with_key_provider(Arc::new(KeyBridge(key_provider)));
    on_runtime(async move { Ok(DeskhandPhone::new(Phone::open(config).await?)) }).await
}

/// Opens a phone whose key is kept in a 0600 file in its data directory (tests, desktops acting as
/// phones). Apps use [`open_phone`].
#[uniffi::export(async_runtime = "tokio")]
pub async fn open_phone_with_key_file(
    settings: PhoneSettings,
) -> Result<Arc<DeskhandPhone>, ApiError> {
    let key = Arc::new(FileKeyProvider::in_data_dir(std::path::Path::new(
        &settings.data_dir,
    )));
    let config = config(settings)?.with_key_provider(key);
    on_runtime(async move { Ok(DeskhandPhone::new(Phone::open(config).await?)) }).await
}

/// A phone paired (or to be paired) with one desktop.
#[derive(uniffi::Object)]
pub struct DeskhandPhone {
    phone: Arc<Phone>,
}

impl DeskhandPhone {
    fn new(phone: Phone) -> Arc<Self> {
        Arc::new(Self {
            phone: Arc::new(phone),
        })
    }

    async fn call<T: Send + 'static, F>(
        &self,
        f: impl FnOnce(Arc<Phone>) -> F + Send + 'static,
    ) -> Result<T, ApiError>
    where
        F: Future<Output = Result<T, deskhand_sync::PhoneError>> + Send + 'static,
    {
        let phone = self.phone.clone();
        on_runtime(async move { Ok(f(phone).await?) }).await
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl DeskhandPhone {
    /// This phone's device id.
    pub fn device_id(&self) -> String {
        self.phone.id().to_string()
    }

    /// Pairs with the desktop whose QR code says `code` (`deskhand://pair?…`).
    pub async fn pair(&self, code: String) -> Result<PairedDesktop, ApiError> {
        self.call(move |p| async move {
            let (id, name) = p.pair(&code).await?;
            Ok(PairedDesktop {
                id: id.to_string(),
                name,
            })
        })
        .await
    }

    /// Background sync on (also: "network changed", "app in the foreground": retry now).
    pub fn start(&self) {
        self.phone.start();
    }

    /// Background sync off (app in the background). Writes go on locally.
    pub fn stop(&self) {
        self.phone.stop();
    }

    /// Syncs now and waits until the phone and the desktop hold the same changes.
    pub async fn sync(&self, timeout_ms: u64) -> Result<(), ApiError> {
        self.call(move |p| async move { p.sync(Duration::from_millis(timeout_ms)).await })
            .await
    }

    /// Writes a message (saved here before this returns; sent when the desktop is reachable).
    /// Returns its id.
    pub async fn send_message(&self, text: String) -> Result<String, ApiError> {
        self.call(move |p| async move { Ok(p.send_message(&text).await?.to_string()) })
            .await
    }

    /// Creates a task directly. Returns its id.
    pub async fn create_task(&self, prompt: String) -> Result<String, ApiError> {
        self.call(move |p| async move { Ok(p.create_task(&prompt).await?.to_string()) })
            .await
    }

    /// Asks the desktop to cancel a task.
    pub async fn cancel_task(&self, task_id: String) -> Result<(), ApiError> {
        self.call(move |p| async move { p.cancel_task(&TaskId::from(task_id)).await })
            .await
    }

    /// Approves a request (signs the exact action it shows).
    pub async fn approve(&self, approval_id: String) -> Result<(), ApiError> {
        self.call(move |p| async move { p.approve(&ApprovalId::from(approval_id)).await })
            .await
    }

    /// Denies a request.
    pub async fn deny(&self, approval_id: String) -> Result<(), ApiError> {
        self.call(move |p| async move { p.deny(&ApprovalId::from(approval_id)).await })
            .await
    }

    /// Writes this phone's Web Push subscription (UnifiedPush on Android) into its own entry of
    /// the workspace, so the desktop can wake it with pushes that carry nothing but "sync now"
    /// while it is not connected. `endpoint`: the URL the distributor gave the app (`https://`;
    /// `http://` only to a loopback host); `p256dh`: the app's P-256 public key, the 65-byte
    /// uncompressed point, base64url; `auth`: the app's 16-byte secret, base64url (RFC 8291).
    /// `Invalid` with the rule broken for a subscription the desktop would refuse.
    pub async fn set_push_subscription(
        &self,
        endpoint: String,
        p256dh: String,
        auth: String,
    ) -> Result<(), ApiError> {
        self.call(move |p| async move { p.set_push_subscription(&endpoint, &p256dh, &auth).await })
            .await
    }

    /// Removes this phone's push subscription: the desktop sends it no more pushes.
    pub async fn clear_push_subscription(&self) -> Result<(), ApiError> {
        self.call(move |p| async move { p.clear_push_subscription().await })
            .await
    }

    /// Loads the next `weeks` weeks of older conversation (newest first) that the desktop holds
    /// and this phone has not (the snapshot's `older_weeks` says how many remain); they sync in
    /// the background and their messages appear in the snapshots as they arrive. Returns how
    /// many weeks were loaded: 0 when there is nothing older.
    pub async fn load_older(&self, weeks: u32) -> Result<u32, ApiError> {
        self.call(move |p| async move { p.load_older(weeks).await })
            .await
    }

    /// The current state.
    pub fn snapshot(&self) -> Result<PhoneSnapshot, ApiError> {
        Ok(self.phone.snapshot()?.into())
    }

    /// Calls `listener` with the current state now and after every change, until the returned
    /// handle is cancelled or dropped.
    pub fn subscribe(&self, listener: Arc<dyn PhoneListener>) -> Arc<SubscriptionHandle> {
        let sub = self.phone.subscribe(Arc::new(ListenerBridge(listener)));
        Arc::new(SubscriptionHandle {
            sub: Mutex::new(Some(sub)),
        })
    }

    /// Fetches a blob (screenshot, long output) from the desktop, verified against its hash.
    pub async fn fetch_blob(&self, hash: String) -> Result<Vec<u8>, ApiError> {
        self.call(move |p| async move { p.fetch_blob(&hash).await })
            .await
    }

    /// Forgets the desktop and its workspace, so that the phone can pair anew. Fails with
    /// `Unsent` while something this phone wrote has not reached the desktop.
    pub async fn forget_desktop(&self) -> Result<(), ApiError> {
        self.call(move |p| async move { p.forget_desktop().await })
            .await
    }

    /// Forgets the desktop even when some of this phone's writes have not reached it (they are
    /// dropped).
    pub async fn forget_desktop_dropping_unsent(&self) -> Result<(), ApiError> {
        self.call(move |p| async move { p.forget_desktop_dropping_unsent().await })
            .await
    }

    /// How many of this phone's writes the desktop is not known to hold yet.
    pub fn unsent_count(&self) -> Result<u64, ApiError> {
        Ok(self.phone.unsent_count()? as u64)
    }

    /// Closes the connection and the database. Later calls fail with `Closed`.
    pub async fn shutdown(&self) {
        let phone = self.phone.clone();
        let _ = runtime().spawn(async move { phone.shutdown().await }).await;
    }
}

/// A live subscription. Dropping it (or `cancel()`) ends it.
#[derive(uniffi::Object)]
pub struct SubscriptionHandle {
    sub: Mutex<Option<Subscription>>,
}

#[uniffi::export]
impl SubscriptionHandle {
    /// Ends the subscription now (garbage-collected languages should not wait for the collector).
    pub fn cancel(&self) {
        self.sub.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
