//! What the other nodes tell this one through the bus: rows they committed and presence their
//! subscribers changed, each handed by the registry to its document if it is loaded here, and
//! that the bus is back, which makes the registry look at every log at once.

use actix::prelude::*;

use super::messages::{LogRowHeard, PresenceHeard};
use super::registry::Registry;
use crate::bus::{BusSink, PeerRow};
use crate::domain::DocId;

/// Bus → Registry: another node committed this row; handed to its document if it is loaded.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RowHeard(pub PeerRow);

/// Bus → Registry: another node's subscribers of `doc` changed presence.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PresenceOfPeers {
    pub doc: DocId,
    pub frame: bytes::Bytes,
}

impl Handler<PresenceOfPeers> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PresenceOfPeers, _: &mut Context<Self>) {
        if let Some(addr) = self.loaded(&msg.doc) {
            addr.do_send(PresenceHeard(msg.frame));
        }
    }
}

/// Bus → Registry: the bus is (back) up; look at the logs now for what it may have missed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WatchNow;

impl Handler<RowHeard> for Registry {
    type Result = ();

    fn handle(&mut self, RowHeard(row): RowHeard, _: &mut Context<Self>) {
        if let Some(addr) = self.loaded(&row.doc) {
            addr.do_send(LogRowHeard {
                position: row.position,
                data: row.data,
            });
        }
    }
}

impl Handler<WatchNow> for Registry {
    type Result = ();

    fn handle(&mut self, _: WatchNow, ctx: &mut Context<Self>) {
        self.watch_log(ctx);
    }
}

/// Hands the rows the bus hears to the registry.
pub(crate) struct RegistrySink(pub Addr<Registry>);

impl BusSink for RegistrySink {
    fn row(&self, row: PeerRow) {
        self.0.do_send(RowHeard(row));
    }

    fn presence(&self, doc: DocId, frame: bytes::Bytes) {
        self.0.do_send(PresenceOfPeers { doc, frame });
    }
}
