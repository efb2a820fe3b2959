//! A second database on the test server, for relays that serve several:
//! created empty, dropped (with its connections) when the test ends.

use super::env::run_from_drop;
use super::{connect, database_url, unique_name};

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
        run_from_drop(
            &database_url(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
