//! A second database on the test server, for relays that serve several:
//! created empty, dropped (with its connections) when the test ends.

use super::{connect, database_url, try_connect, unique_name};

pub struct SpareDatabase {
    pub url: String,
    pub name: String,
}

impl SpareDatabase {
    pub async fn create() -> Self {
        let name = unique_name("db");
        let admin = connect(&database_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let base = database_url();
        let (server, _) = base.rsplit_once('/').expect("a URL with a database");
        SpareDatabase {
            url: format!("{server}/{name}"),
            name,
        }
    }
}

impl Drop for SpareDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await; a thread with a runtime of its own can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = try_connect(&database_url()).await?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                client.batch_execute(&sql).await.ok()
            })
        });
        let _ = dropped.join();
    }
}
