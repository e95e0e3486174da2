//! Frontends: each turns its clients' doings into commands on the appliance and tells them what
//! the appliance's event queue says: the control and admin sockets (shm clients, vnicctl), the
//! vhost library's device events, memif connections, and the destinations of moves.
pub mod memif;
pub mod mobility;
pub mod socket;
pub mod vhost;
