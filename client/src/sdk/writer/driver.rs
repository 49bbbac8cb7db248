//! The writer's driver on the I/O thread (stub).

use std::rc::Rc;
use std::sync::Arc;

use crate::sdk::io::Io;
use crate::sdk::writer::Shared;

pub(crate) struct Driver {
    _io: Rc<Io>,
    _shared: Arc<Shared>,
    _range: wire::Range,
}

impl Driver {
    pub(crate) fn new(io: Rc<Io>, shared: Arc<Shared>, range: wire::Range) -> Driver {
        Driver {
            _io: io,
            _shared: shared,
            _range: range,
        }
    }

    pub(crate) async fn run(self) {}
}
