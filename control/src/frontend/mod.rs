//! Frontends: each turns its clients' doings into calls on the appliance and tells them what the
//! appliance's event queue says. Today one: the control and admin sockets.
pub mod socket;
