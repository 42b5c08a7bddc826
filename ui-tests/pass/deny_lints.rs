// Strict lints survive the expansion.
#![deny(
    unused_qualifications,
    dead_code,
    unused_variables,
    unused_mut,
    unused_imports
)]

use resilience_runtime::prelude::*;

#[derive(Debug)]
pub struct Error(pub ResilienceError);

impl From<ResilienceError> for Error {
    fn from(e: ResilienceError) -> Self {
        Error(e)
    }
}

pub struct Thing {
    pub n: u32,
}

impl Thing {
    #[with_resilience(
        service = "strict",
        timeout = "1s",
        retry(max_attempts = 2, delay = "1ms")
    )]
    #[fallback = Self::backup]
    pub async fn run(
        &mut self,
        mut text: String,
        by: &mut u32,
        (a, b): (u32, u32),
    ) -> Result<usize, Error> {
        text.push('!');
        *by += a + b;
        self.n += 1;
        Ok(text.len())
    }

    fn backup(
        &mut self,
        text: String,
        by: &mut u32,
        pair: (u32, u32),
        e: Error,
    ) -> Result<usize, Error> {
        let _ = (e, pair);
        *by += self.n;
        Ok(text.len())
    }

    #[with_retry(max_attempts = 2, delay = "1ms")]
    pub fn sync_run(&self, mut v: Vec<u8>) -> Result<usize, Error> {
        v.push(1);
        Ok(v.len() + self.n as usize)
    }
}

// An argument only the fallback uses is no unused variable.
#[with_resilience(circuit_breaker(failure_threshold = 2))]
#[fallback = echo]
pub fn only_fallback_uses(arg: String) -> Result<String, Error> {
    Ok(String::new())
}

fn echo(arg: String) -> Result<String, Error> {
    Ok(arg)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut t = Thing { n: 0 };
    let mut by = 0;
    assert_eq!(t.run("a".into(), &mut by, (1, 2)).await.unwrap(), 2);
    assert_eq!(t.sync_run(vec![]).unwrap(), 2);
    assert_eq!(only_fallback_uses("x".into()).unwrap(), "");
}
