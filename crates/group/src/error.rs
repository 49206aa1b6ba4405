//! The crate's one error type. Variants never carry secrets; detailed MLS failures stay local
//! (they are for the user's own client, never sent to a peer).

use mls_rs::error::MlsError;

/// What went wrong in the room's MLS layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The sealed GroupInfo did not open: a wrong password, another room, or tampering.
    #[error(
        "the room's key material does not match this password (the stored group information did not open)"
    )]
    GroupInfoKey,
    /// The sealed GroupInfo is not well formed (length, version, size limit).
    #[error("the room's stored group information is malformed: {0}")]
    MalformedGroupInfo(&'static str),
    /// The GroupInfo opened but describes another group, suite or key generation.
    #[error("the room's stored group information belongs to another group: {0}")]
    WrongGroup(&'static str),
    /// An MLS message or state was refused by the MLS library; the group state is unchanged.
    #[error("MLS refused the operation: {0}")]
    Mls(#[from] MlsError),
    /// The outer (envelope) sender is not the MLS sender of the message.
    #[error("the message's MLS sender is not the member who signed its envelope")]
    SenderMismatch,
    /// The envelope's kind byte does not match the MLS content type.
    #[error("the message's kind does not match its MLS content")]
    KindMismatch,
    /// A log entry's MLSMessage is larger than `MAX_MLS_LEN`; refused before parsing.
    #[error("an MLS message of {0} bytes is larger than the 16384-byte limit")]
    TooLarge(usize),
    /// No leaf of the group holds this identity.
    #[error("that identity is not a member of the group")]
    NotAMember,
    /// The operation needs membership, but this client's entry commit is not confirmed yet.
    #[error("not a member yet: the entry commit has not appeared in the room's log")]
    NotEntered,
    /// The state blob is malformed or from an unknown version.
    #[error("the saved room state is unreadable: {0}")]
    State(&'static str),
}
