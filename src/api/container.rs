//! `org.voxnix.Voxnix1.Container`: one object per container at
//! `/org/voxnix/Voxnix1/container/<escaped name>`. The bus policy lets only
//! root reach these objects (front ends use the Manager, whose every method is
//! owner-scoped), so their existence never leaks to other owners.

use std::sync::Arc;

use zbus::message::Header;

use super::caller::{Access, Caller};
use super::error::{ApiError, to_json};
use crate::engine::{Engine, EngineError, Scope};

pub struct Container {
    pub name: String,
    pub engine: Arc<Engine>,
    pub access: Access,
}

impl Container {
    async fn scope(
        &self,
        conn: &zbus::Connection,
        hdr: Option<&Header<'_>>,
    ) -> Result<Scope, ApiError> {
        let Some(hdr) = hdr else {
            return Ok(Scope::All);
        };
        let caller = Caller::identify(conn, hdr, &self.access).await?;
        if let Caller::FrontEnd { .. } = caller {
            // These objects take no owner argument, and a front end must
            // always say whom it acts for (the bus policy keeps them out too).
            return Err(EngineError::AccessDenied(
                "front ends act through the Manager, naming the owner they act for".into(),
            )
            .into());
        }
        Ok(caller.scope("", &self.access)?.0)
    }

    async fn status(
        &self,
        conn: &zbus::Connection,
        hdr: Option<&Header<'_>>,
    ) -> zbus::fdo::Result<crate::engine::ContainerStatus> {
        let scope = self
            .scope(conn, hdr)
            .await
            .map_err(|e| zbus::fdo::Error::AccessDenied(e.to_string()))?;
        self.engine
            .status(&scope, &self.name)
            .await
            .map_err(|e| zbus::fdo::Error::Failed(format!("{}: {}", e.kind(), e.message())))
    }
}

/// One container. Methods act as the admin; see the Manager for owner-scoped access.
#[zbus::interface(name = "org.voxnix.Voxnix1.Container")]
impl Container {
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        let scope = self.scope(conn, Some(&hdr)).await?;
        Ok(self.engine.start(&scope, &self.name).await?)
    }

    /// Writes the conf file again from the record (see the Manager's Repair).
    async fn repair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        let scope = self.scope(conn, Some(&hdr)).await?;
        Ok(self.engine.repair(&scope, &self.name).await?)
    }

    async fn stop(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        let scope = self.scope(conn, Some(&hdr)).await?;
        Ok(self.engine.stop(&scope, &self.name).await?)
    }

    async fn restart(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        let scope = self.scope(conn, Some(&hdr)).await?;
        Ok(self.engine.restart(&scope, &self.name).await?)
    }

    async fn destroy(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        let scope = self.scope(conn, Some(&hdr)).await?;
        Ok(self.engine.destroy(&scope, &self.name).await?)
    }

    /// The last `lines` (1-1000) log lines as a JSON array.
    async fn logs(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        lines: u32,
    ) -> Result<String, ApiError> {
        let scope = self.scope(conn, Some(&hdr)).await?;
        to_json(&self.engine.logs(&scope, &self.name, lines).await?)
    }

    #[zbus(out_args("exit_code", "stdout", "stderr", "truncated"))]
    async fn exec(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        argv: Vec<String>,
        timeout_secs: u32,
    ) -> Result<(i32, Vec<u8>, Vec<u8>, bool), ApiError> {
        let scope = self.scope(conn, Some(&hdr)).await?;
        let r = self
            .engine
            .exec(&scope, &self.name, argv, timeout_secs)
            .await?;
        Ok((
            r.exit_code,
            r.stdout,
            r.stderr,
            r.stdout_truncated || r.stderr_truncated,
        ))
    }

    #[zbus(property)]
    async fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    async fn owner(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<String> {
        Ok(self.status(conn, hdr.as_ref()).await?.summary.owner)
    }

    #[zbus(property)]
    async fn state(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<String> {
        Ok(self.status(conn, hdr.as_ref()).await?.summary.state)
    }

    #[zbus(property)]
    async fn modules(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.status(conn, hdr.as_ref()).await?.summary.modules)
    }

    #[zbus(property)]
    async fn addresses(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.status(conn, hdr.as_ref()).await?.summary.addresses)
    }

    /// Seconds since the epoch.
    #[zbus(property)]
    async fn created_at(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<u64> {
        Ok(self.status(conn, hdr.as_ref()).await?.summary.created_at)
    }
}
