// TEMP STUB
use crate::model::Job;
pub struct Webhooks;
pub struct Delivery;
impl Delivery { pub fn for_job(_j: &Job) -> Option<Self> { None } }
impl Webhooks { pub fn send(&self, _d: Delivery) {} }
