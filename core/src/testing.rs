//! Helpers for this crate's unit tests.

use automerge::Automerge;

use crate::DeviceId;
use crate::schema::{DesktopInfo, ExecutorState, SchemaError, Workspace};

/// The document a desktop with id `desk` creates: its actor, the schema-v1 skeleton.
pub(crate) fn desktop_doc(desk: DeviceId) -> Automerge {
    let mut doc = Automerge::new().with_actor(desk.actor_id());
    doc.transact::<_, _, SchemaError>(|tx| {
        Workspace::init(
            tx,
            &DesktopInfo {
                id: desk.to_string(),
                name: "d".into(),
                os: "l".into(),
                heartbeat_at: 0,
                executor: ExecutorState::Idle,
            },
        )
    })
    .expect("a new document takes the skeleton");
    doc
}
