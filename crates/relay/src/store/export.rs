//! A store's contents as records, read page by page from one backend and
//! written to another (`cairn-relay migrate`): every fact the index keeps,
//! times included, so a migrated relay behaves as the original would have.

use cairn_proto::BlobId;

use super::model::{BlobRecord, ForwardRow, HeadKey, HeadRow};
use super::writer::WriteOp;
use super::{Backend, InsertOutcome, Staged, Store, StoreError};

impl Store {
    /// Up to `max` blobs with ids above `after`, in id order.
    pub(crate) async fn export_blobs(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<BlobRecord>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                Self::read_embedded(reader, move |r| r.blobs_after(after, max)).await
            }
            Backend::ScaleOut(backend) => backend.index.blobs_after(after, max).await,
        }
    }

    /// Up to `max` heads after `after` in (mailbox, slot) order.
    pub(crate) async fn export_heads(
        &self,
        after: Option<HeadKey>,
        max: usize,
    ) -> Result<Vec<HeadRow>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                Self::read_embedded(reader, move |r| r.heads_after(after.as_ref(), max)).await
            }
            Backend::ScaleOut(backend) => backend.index.heads_after(after.as_ref(), max).await,
        }
    }

    /// Up to `max` forwarding records with ids above `after`.
    pub(crate) async fn export_forwards(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<ForwardRow>, StoreError> {
        match &self.backend {
            Backend::Embedded { reader, .. } => {
                Self::read_embedded(reader, move |r| r.forwards_after(after, max)).await
            }
            Backend::ScaleOut(backend) => backend.index.forwards_after(after, max).await,
        }
    }

    /// Stores verified bytes with `record`'s index facts; `AlreadyHeld` if
    /// this store has the blob, `RelayFull` if it has no room.
    pub(crate) async fn import_blob(
        &self,
        staged: Staged,
        record: BlobRecord,
    ) -> Result<InsertOutcome, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::Import {
                    staged,
                    record,
                    reply,
                })
                .await
            }
            Backend::ScaleOut(backend) => backend.import(staged, &record).await,
        }
    }

    /// Stores a head unless this store holds one at least as new.
    pub(crate) async fn import_head(&self, row: HeadRow) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::ImportHead { row, reply }).await
            }
            Backend::ScaleOut(backend) => backend.index.import_head(&row).await,
        }
    }

    /// Keeps a forwarding record unless this store holds the blob.
    pub(crate) async fn import_forward(&self, row: ForwardRow) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded { tx, .. } => {
                Self::send(tx, |reply| WriteOp::ImportForward { row, reply }).await
            }
            Backend::ScaleOut(backend) => backend.index.import_forward(&row).await,
        }
    }
}
