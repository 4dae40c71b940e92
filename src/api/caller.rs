//! Who is calling: decided from the bus (the connection's uid and groups, as
//! the bus daemon reports them), never from an argument alone.

use zbus::message::Header;

use crate::engine::{EngineError, Owner, Scope};

/// The access settings the daemon enforces (part of its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The front-end group (`voxnix` by default).
    pub frontend_group: String,
    /// Its gid when the daemon started, if it existed then; looked up again
    /// at a call while it is unknown (a group made after the daemon started
    /// counts without a restart).
    pub frontend_gid: Option<u32>,
    /// Owner kinds a front-end group member may act as (e.g. `telegram`).
    pub frontend_owner_kinds: Vec<String>,
    /// Owners allowed the administrator's methods when a front end (or a
    /// local user, as itself) acts for them (`admin_owners` and the
    /// Telegram admins in the configuration).
    pub admin_owners: Vec<Owner>,
}

/// A caller, as the bus identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// uid 0: sees everything, may act as any owner it names.
    Admin,
    /// A member of the front-end group: acts for the owner it names, within
    /// the allowed kinds, and only for that owner.
    FrontEnd { uid: u32 },
    /// Any other local user: acts only as `unix:<uid>`.
    Local { uid: u32 },
}

impl Caller {
    /// Identifies the sender of the message behind `hdr`.
    pub async fn identify(
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        access: &Access,
    ) -> Result<Self, EngineError> {
        let sender = hdr.sender().ok_or_else(|| {
            EngineError::AccessDenied("the message has no sender; call over a bus".into())
        })?;
        let dbus = zbus::fdo::DBusProxy::new(conn)
            .await
            .map_err(|e| EngineError::HostError(format!("bus daemon proxy: {e}")))?;
        let creds = dbus
            .get_connection_credentials(sender.clone().into())
            .await
            .map_err(|e| EngineError::HostError(format!("cannot identify the caller: {e}")))?;
        let uid = creds.unix_user_id().ok_or_else(|| {
            EngineError::AccessDenied("the bus did not report the caller's uid".into())
        })?;
        if uid == 0 {
            return Ok(Caller::Admin);
        }
        let gid = access.frontend_gid.or_else(|| {
            nix::unistd::Group::from_name(&access.frontend_group)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        });
        let in_group = match (gid, creds.unix_group_ids()) {
            (Some(gid), Some(groups)) => groups.contains(&gid),
            _ => false,
        };
        Ok(if in_group {
            Caller::FrontEnd { uid }
        } else {
            Caller::Local { uid }
        })
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    /// What the caller may see, and whom it acts as, given the owner it asked
    /// to act for (`""` for none).
    pub fn scope(&self, requested: &str, access: &Access) -> Result<(Scope, Owner), EngineError> {
        match self {
            Caller::Admin if requested.is_empty() => Ok((Scope::All, Owner::unix(0))),
            Caller::Admin => {
                let o = Owner::parse(requested)?;
                Ok((Scope::Owner(o.clone()), o))
            }
            Caller::FrontEnd { .. } => {
                if requested.is_empty() {
                    return Err(EngineError::InvalidArgument(
                        "owner: a front end must name the owner it acts for (e.g. 'telegram:123')"
                            .into(),
                    ));
                }
                let o = Owner::parse(requested)?;
                if !access.frontend_owner_kinds.iter().any(|k| k == o.kind()) {
                    return Err(EngineError::AccessDenied(format!(
                        "owner: front ends may act only for owners of kind {}",
                        access.frontend_owner_kinds.join(", ")
                    )));
                }
                Ok((Scope::Owner(o.clone()), o))
            }
            Caller::Local { uid } => {
                let me = Owner::unix(*uid);
                if !requested.is_empty() && requested != me.as_str() {
                    return Err(EngineError::AccessDenied(format!(
                        "owner: you can act only as {me}"
                    )));
                }
                Ok((Scope::Owner(me.clone()), me))
            }
        }
    }

    /// For the administrator's methods: root, or a caller acting (within its
    /// scope rules) for an owner listed as an admin in the configuration.
    pub fn require_admin(&self, requested: &str, access: &Access) -> Result<(), EngineError> {
        if self.is_admin() {
            return Ok(());
        }
        let (_, owner) = self.scope(requested, access)?;
        if access.admin_owners.contains(&owner) {
            Ok(())
        } else {
            Err(EngineError::AccessDenied(format!(
                "this method is for administrators: root, or an owner listed in admin_owners (or [telegram] admin_chat_ids); {owner} is not"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            frontend_group: "voxnix".into(),
            frontend_gid: Some(990),
            frontend_owner_kinds: vec!["telegram".into()],
            admin_owners: vec![Owner::parse("telegram:7").unwrap(), Owner::unix(1001)],
        }
    }

    #[test]
    fn admin_sees_all_or_acts_as_named_owner() {
        let (s, o) = Caller::Admin.scope("", &access()).unwrap();
        assert_eq!((s, o.as_str()), (Scope::All, "unix:0"));
        let (s, o) = Caller::Admin.scope("telegram:5", &access()).unwrap();
        assert_eq!(s, Scope::Owner(o.clone()));
        assert_eq!(o.as_str(), "telegram:5");
    }

    #[test]
    fn front_ends_are_scoped_to_allowed_kinds() {
        let fe = Caller::FrontEnd { uid: 990 };
        assert!(fe.scope("", &access()).is_err());
        assert!(matches!(
            fe.scope("unix:0", &access()),
            Err(EngineError::AccessDenied(_))
        ));
        let (s, _) = fe.scope("telegram:1", &access()).unwrap();
        assert!(s.allows(&Owner::parse("telegram:1").unwrap()));
        assert!(!s.allows(&Owner::parse("telegram:2").unwrap()));
    }

    #[test]
    fn admin_methods_need_root_or_a_listed_owner() {
        assert!(Caller::Admin.require_admin("", &access()).is_ok());
        let fe = Caller::FrontEnd { uid: 990 };
        assert!(fe.require_admin("telegram:7", &access()).is_ok());
        let err = fe.require_admin("telegram:8", &access()).unwrap_err();
        assert!(matches!(err, EngineError::AccessDenied(_)));
        assert!(err.to_string().contains("telegram:8 is not"), "{err}");
        // A front end cannot claim an admin owner of a kind it may not act for.
        assert!(fe.require_admin("unix:1001", &access()).is_err());
        assert!(fe.require_admin("", &access()).is_err());
        // A local user listed as an admin may, as itself only.
        assert!(
            Caller::Local { uid: 1001 }
                .require_admin("", &access())
                .is_ok()
        );
        assert!(
            Caller::Local { uid: 1000 }
                .require_admin("unix:1001", &access())
                .is_err()
        );
    }

    #[test]
    fn local_users_act_only_as_themselves() {
        let me = Caller::Local { uid: 1000 };
        let (s, o) = me.scope("", &access()).unwrap();
        assert_eq!(o.as_str(), "unix:1000");
        assert!(!s.allows(&Owner::unix(1001)));
        assert!(me.scope("unix:1000", &access()).is_ok());
        assert!(matches!(
            me.scope("telegram:1", &access()),
            Err(EngineError::AccessDenied(_))
        ));
        assert!(matches!(
            me.require_admin("", &access()),
            Err(EngineError::AccessDenied(_))
        ));
    }
}
