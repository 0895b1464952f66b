//! Which command applies to a container in which status: one table, so a
//! command's refusal (and its advice) is written once and a change of rule
//! (runc's `kill --all` of a stopped container, say) is one row.

use crate::state::Status;
use crate::{Error, Result};

/// A command on an existing container, as far as its status matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `start`.
    Start,
    /// `kill`.
    Kill,
    /// `delete` without `--force`.
    Delete,
    /// `delete --force`.
    ForceDelete,
    /// `exec`.
    Exec,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `update`.
    Update,
    /// `ps`.
    Ps,
    /// `events` (and `--stats`).
    Events,
}

impl Op {
    /// Whether a container in `status` takes this command; if not, what the
    /// user is told (after `container ID is STATUS: `).
    pub fn allowed_in(self, status: Status) -> std::result::Result<(), &'static str> {
        use Status::{Created, Creating, Paused, Running, Stopped};
        match (self, status) {
            (Op::Start, Created) => Ok(()),
            (Op::Start, Running | Paused) => Err("cannot start an already running container"),
            (Op::Start, Stopped) => {
                Err("cannot start a container that has stopped: delete it and create it again")
            }
            (Op::Start, Creating) => Err("cannot start a container that is creating"),

            (Op::Kill, Created | Running | Paused) => Ok(()),
            (Op::Kill, Creating | Stopped) => Err("container not running"),

            // runc deletes a created container without --force: its process
            // never ran.
            (Op::Delete, Stopped | Created) => Ok(()),
            (Op::Delete, Creating | Running | Paused) => {
                Err("cannot delete a container that is not stopped: use --force")
            }
            (Op::ForceDelete, _) => Ok(()),

            (Op::Exec, Created | Running) => Ok(()),
            (Op::Exec, Stopped) => {
                Err("cannot exec in a stopped container: create and start it again")
            }
            (Op::Exec, Paused) => Err("cannot exec in a paused container: resume it first"),
            (Op::Exec, Creating) => Err("cannot exec in a container that is still being created"),

            (Op::Pause, Running | Created) => Ok(()),
            (Op::Pause, Creating | Paused | Stopped) => {
                Err("container not running: only a running or created container can be paused")
            }

            (Op::Resume, Paused) => Ok(()),
            (Op::Resume, _) => Err("container not paused"),

            (Op::Update, Running | Created | Paused) => Ok(()),
            (Op::Update, Creating | Stopped) => {
                Err("cannot update the resources of a container that is not running")
            }

            (Op::Ps | Op::Events, Stopped) => Err("container not running"),
            (Op::Ps | Op::Events, _) => Ok(()),
        }
    }

    /// [`Op::allowed_in`] as the command's error for container `id`.
    pub fn check(self, id: &str, status: Status) -> Result<()> {
        self.allowed_in(status).map_err(|what| Error::WrongStatus {
            id: id.to_owned(),
            status,
            what: what.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Created, Creating, Paused, Running, Stopped};

    const ALL: [Status; 5] = [Creating, Created, Running, Paused, Stopped];

    fn allowed(op: Op) -> Vec<Status> {
        ALL.into_iter()
            .filter(|s| op.allowed_in(*s).is_ok())
            .collect()
    }

    #[test]
    fn the_table_is_runcs() {
        assert_eq!(allowed(Op::Start), [Created]);
        assert_eq!(allowed(Op::Kill), [Created, Running, Paused]);
        assert_eq!(allowed(Op::Delete), [Created, Stopped]);
        assert_eq!(allowed(Op::ForceDelete), ALL);
        assert_eq!(allowed(Op::Exec), [Created, Running]);
        assert_eq!(allowed(Op::Pause), [Created, Running]);
        assert_eq!(allowed(Op::Resume), [Paused]);
        assert_eq!(allowed(Op::Update), [Created, Running, Paused]);
        assert_eq!(allowed(Op::Ps), [Creating, Created, Running, Paused]);
        assert_eq!(allowed(Op::Events), [Creating, Created, Running, Paused]);
    }

    #[test]
    fn a_refusal_names_the_container_and_its_status() {
        let err = Op::Start.check("c1", Stopped).unwrap_err().to_string();
        assert_eq!(
            err,
            "container c1 is stopped: cannot start a container that has stopped: delete it and create it again"
        );
    }
}
