//! An AI service base type: every model client answers with a "temporarily
//! unavailable" response built from the request when its calls fail, and a service
//! can override that default.
//!
//! Run: `cargo run -p resilience-examples --example ai_fallback`

use resilience_examples::{Behaviour, FlakyService};
use resilience_runtime::prelude::*;

#[derive(Clone, Debug)]
struct Prompt {
    model: &'static str,
    text: String,
}

#[derive(Debug)]
struct Completion {
    text: String,
    degraded: bool,
}

#[derive(Debug, thiserror::Error)]
enum AiError {
    #[error("model overloaded")]
    Overloaded,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

/// The base type: the default response when the model cannot answer.
trait AiService {
    fn name(&self) -> &'static str;

    fn unavailable(&self, prompt: &Prompt) -> Completion {
        Completion {
            text: format!(
                "{} is temporarily unavailable; your request \"{}\" was not processed. Please try again shortly.",
                self.name(),
                prompt.text
            ),
            degraded: true,
        }
    }
}

struct ChatModel {
    backend: FlakyService,
}

impl AiService for ChatModel {
    fn name(&self) -> &'static str {
        "chat"
    }
}

impl ChatModel {
    #[with_resilience(
        service = "ai.chat",
        retry(max_attempts = 2, delay = "10ms"),
        circuit_breaker(failure_threshold = 3, cooldown = "1s")
    )]
    #[fallback = Self::degrade]
    async fn complete(&self, prompt: Prompt) -> Result<Completion, AiError> {
        match self.backend.next() {
            Behaviour::Ok => Ok(Completion {
                text: format!("[{}] answer to: {}", prompt.model, prompt.text),
                degraded: false,
            }),
            _ => Err(AiError::Overloaded),
        }
    }

    /// The base type's default.
    fn degrade(&self, prompt: Prompt) -> Result<Completion, AiError> {
        Ok(self.unavailable(&prompt))
    }
}

struct EmbeddingModel {
    backend: FlakyService,
}

impl AiService for EmbeddingModel {
    fn name(&self) -> &'static str {
        "embeddings"
    }
    /// Overridden: an embedding client answers with a cached vector instead.
    fn unavailable(&self, prompt: &Prompt) -> Completion {
        Completion {
            text: format!("cached embedding for \"{}\"", prompt.text),
            degraded: true,
        }
    }
}

impl EmbeddingModel {
    #[with_resilience(
        service = "ai.embeddings",
        retry(max_attempts = 1),
        circuit_breaker(failure_threshold = 2, cooldown = "1s")
    )]
    #[fallback = Self::degrade]
    async fn embed(&self, prompt: Prompt) -> Result<Completion, AiError> {
        match self.backend.next() {
            Behaviour::Ok => Ok(Completion {
                text: format!("vector({})", prompt.text.len()),
                degraded: false,
            }),
            _ => Err(AiError::Overloaded),
        }
    }

    /// Async fallback with the error: logs why, then uses the override.
    async fn degrade(&self, prompt: Prompt, error: AiError) -> Result<Completion, AiError> {
        println!("   (embeddings fell back because: {error})");
        Ok(self.unavailable(&prompt))
    }
}

#[tokio::main]
async fn main() {
    let chat = ChatModel {
        backend: FlakyService::new("SFFFFFFF"),
    };
    let emb = EmbeddingModel {
        backend: FlakyService::new("SFFFF"),
    };
    for i in 1..=4 {
        let p = Prompt {
            model: "gpt-x",
            text: format!("question {i}"),
        };
        let c = chat
            .complete(p.clone())
            .await
            .expect("the fallback always answers");
        println!("chat #{i}: degraded={} {}", c.degraded, c.text);
        let e = emb.embed(p).await.expect("the fallback always answers");
        println!("emb  #{i}: degraded={} {}", e.degraded, e.text);
    }
    for s in ["ai.chat", "ai.embeddings"] {
        let st = status(s).expect("called above");
        println!(
            "{s}: state {:?}, {} failures, {} rejections, {} fallbacks",
            st.state, st.failures, st.rejections, st.fallbacks
        );
    }
}
