//! Mailbox heads (PROTOCOL.md §7.7): read one, list a mailbox, store one.

use cairn_api::CallError;
use cairn_proto::wire::{self, HeadListing};
use cairn_proto::{ErrorCode, SignedRecord, Slot, VerifyingKey};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use super::RelayClient;
use super::answer::{MAX_SMALL_BODY, json_answer, send, send_only, small_body};
use crate::error::RelayError;
use crate::relay::head::Head;

/// Largest head listing accepted (1024 slots of a few hundred bytes).
const MAX_HEAD_LISTING: usize = 2 << 20;

/// What a head write came to.
#[derive(Debug)]
pub enum HeadWrite {
    /// The relay now holds the head.
    Stored,
    /// The relay holds a head with a sequence number at least as high (or,
    /// for an owned slot, the writer's own head at least as high).
    Stale(Option<Box<Head>>),
}

impl RelayClient {
    fn head_url(&self, mailbox: &VerifyingKey, slot: &Slot) -> String {
        format!("{}{}", self.url, wire::head_path(mailbox, slot))
    }

    /// The head in `slot` of `mailbox`, verified; `None` if there is none.
    pub async fn get_head(
        &self,
        mailbox: &VerifyingKey,
        slot: &Slot,
    ) -> Result<Option<Head>, RelayError> {
        let response = match send(self.http.get(self.head_url(mailbox, slot))).await {
            Ok(response) => response,
            Err(err) if err.code() == Some(ErrorCode::NotFound) => return Ok(None),
            Err(err) => return Err(err),
        };
        let bytes = small_body(response).await?;
        let head = verify_head(&bytes, mailbox, slot)?;
        Ok(Some(head))
    }

    /// Every head in `mailbox`, each verified (one request, whatever the
    /// number of slots). Heads that do not verify are dropped and counted.
    pub async fn list_heads(
        &self,
        mailbox: &VerifyingKey,
    ) -> Result<(Vec<Head>, usize), RelayError> {
        let url = format!("{}{}", self.url, wire::heads_path(mailbox));
        let response = send(self.http.get(url)).await?;
        let listing: HeadListing = json_answer(response, MAX_HEAD_LISTING, "head listing").await?;
        let mut heads = Vec::with_capacity(listing.heads.len());
        let mut bad = 0;
        for text in &listing.heads {
            let head = cairn_proto::decode_base64url(text, MAX_SMALL_BODY)
                .ok()
                .and_then(|bytes| Head::from_bytes(&bytes).ok())
                .filter(|head| &head.mailbox == mailbox);
            match head {
                Some(head) => heads.push(head),
                None => bad += 1,
            }
        }
        Ok((heads, bad))
    }

    /// Stores a head: an owned head signed by its writer, or (for pairing
    /// rendezvous) a legacy head signed by its mailbox key.
    pub async fn put_head(&self, record: &SignedRecord) -> Result<HeadWrite, RelayError> {
        let head = Head::from_record(record.clone())
            .map_err(|err| RelayError::Protocol(format!("refusing to send a bad head: {err}")))?;
        let url = self.head_url(&head.mailbox, &head.slot);
        let request = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(record.to_bytes());
        match cairn_api::check_status(send_only(request).await?).await {
            Ok(_) => Ok(HeadWrite::Stored),
            Err(CallError::Refused(refusal)) if refusal.status == StatusCode::CONFLICT => {
                let current = refusal
                    .answer
                    .and_then(|answer| answer.current)
                    .and_then(|text| cairn_proto::decode_base64url(&text, MAX_SMALL_BODY).ok())
                    .and_then(|bytes| verify_head(&bytes, &head.mailbox, &head.slot).ok())
                    .map(Box::new);
                Ok(HeadWrite::Stale(current))
            }
            Err(err) => Err(err.into()),
        }
    }
}

fn verify_head(bytes: &[u8], mailbox: &VerifyingKey, slot: &Slot) -> Result<Head, RelayError> {
    let head = Head::from_bytes(bytes).map_err(RelayError::Protocol)?;
    if &head.mailbox != mailbox || &head.slot != slot {
        return Err(RelayError::Protocol(
            "served a head from another mailbox or slot".into(),
        ));
    }
    Ok(head)
}
