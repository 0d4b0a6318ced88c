//! Builds the components of `plugins/python`. (To be written.)

use crate::{Built, Context};

pub fn build(_context: &Context) -> Vec<Built> {
    Vec::new()
}
