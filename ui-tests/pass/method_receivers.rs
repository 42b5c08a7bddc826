// Methods with `&self`, `&mut self`, `self` and `mut self`, async and sync, under a
// retry: the body sees `self` as written.
use resilience_runtime::prelude::*;

#[derive(Debug)]
struct Error(#[allow(dead_code)] String);

#[derive(Clone, Debug, Default)]
struct Counter {
    calls: u32,
    name: String,
}

impl Counter {
    #[with_retry(max_attempts = 3, delay = "1ms")]
    async fn read(&self, extra: u32) -> Result<u32, Error> {
        Ok(self.calls + extra)
    }

    #[with_retry(max_attempts = 3, delay = "1ms")]
    async fn bump(&mut self) -> Result<u32, Error> {
        self.calls += 1;
        if self.calls < 2 {
            return Err(Error(format!("{} not yet", self.name)));
        }
        Ok(self.calls)
    }

    #[with_retry(max_attempts = 3, delay = "1ms")]
    async fn into_name(self) -> Result<String, Error> {
        Ok(self.name)
    }

    #[with_retry(max_attempts = 2, delay = "1ms")]
    async fn renamed(mut self, to: &str) -> Result<Counter, Error> {
        self.name = to.to_owned();
        Ok(self)
    }

    #[with_retry(max_attempts = 3, delay = "1ms")]
    fn bump_sync(&mut self, by: u32) -> Result<u32, Error> {
        self.calls += by;
        Ok(self.calls)
    }

    #[with_retry(max_attempts = 3, delay = "1ms")]
    fn take_sync(self) -> Result<u32, Error> {
        let Counter { calls, .. } = self;
        Ok(calls)
    }

    #[with_retry(max_attempts = 3, delay = "1ms")]
    fn nested(&self) -> Result<u32, Error> {
        // `self` inside closures and macros is the receiver; inside nested items it is theirs.
        struct Inner(u32);
        impl Inner {
            fn get(&self) -> u32 {
                self.0
            }
        }
        let f = || self.calls;
        println!("{} {}", self.name, self.calls);
        Ok(f() + Inner(1).get() + self::helper())
    }
}

fn helper() -> u32 {
    0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut c = Counter {
        calls: 0,
        name: "c".into(),
    };
    assert_eq!(c.read(1).await.unwrap(), 1);
    assert_eq!(c.bump().await.unwrap(), 2);
    assert_eq!(c.bump_sync(3).unwrap(), 5);
    assert_eq!(c.nested().unwrap(), 6);
    let c = c.renamed("d").await.unwrap();
    assert_eq!(c.clone().take_sync().unwrap(), 5);
    assert_eq!(c.into_name().await.unwrap(), "d");
}
