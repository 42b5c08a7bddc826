// `impl Trait` arguments (and an `impl Trait` inside the `Ok` type).
use resilience_runtime::prelude::*;

#[with_retry(max_attempts = 3, delay = "1ms")]
async fn join(
    parts: impl IntoIterator<Item = String> + Clone,
    sep: &str,
) -> Result<String, std::fmt::Error> {
    Ok(parts.into_iter().collect::<Vec<_>>().join(sep))
}

#[with_retry(max_attempts = 3, delay = "1ms")]
fn render(x: impl std::fmt::Display + Clone) -> Result<impl std::fmt::Display, std::fmt::Error> {
    Ok(format!("<{x}>"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let parts = vec!["a".to_owned(), "b".to_owned()];
    assert_eq!(join(parts, "-").await.unwrap(), "a-b");
    assert_eq!(render(3).unwrap().to_string(), "<3>");
}
