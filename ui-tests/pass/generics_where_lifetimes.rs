// Generic functions with where-clauses and lifetimes, returning borrowed data.
use std::fmt::Display;

use resilience_runtime::prelude::*;

struct Cache<K> {
    items: Vec<(K, String)>,
}

impl<K: PartialEq + Clone> Cache<K> {
    #[with_retry(max_attempts = 2, delay = "1ms")]
    async fn find<'a, Q>(&'a self, key: &Q) -> Result<&'a str, String>
    where
        K: PartialEq<Q>,
        Q: ?Sized,
    {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| "missing".to_owned())
    }
}

#[with_resilience(retry(max_attempts = 2, delay = "1ms"))]
fn show<T, E>(value: T) -> Result<String, E>
where
    T: Display + Clone,
    E: From<ResilienceError>,
{
    Ok(value.to_string())
}

#[with_retry(max_attempts = 2, delay = "1ms")]
fn first<'a, 'b: 'a>(a: &'a str, _b: &'b str) -> Result<&'a str, std::fmt::Error> {
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let c = Cache {
        items: vec![(1u32, "one".to_owned())],
    };
    assert_eq!(c.find(&1).await.unwrap(), "one");
    assert_eq!(show::<_, anyhow::Error>(5).unwrap(), "5");
    assert_eq!(first("x", "y").unwrap(), "x");
}
