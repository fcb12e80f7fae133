//! The rebuild's memory pool: DataFusion's fair spilling pool, except that a `RepartitionExec` is never
//! refused memory. Refused, it writes its batches to a spill pool whose reader, in DataFusion 55, can wait
//! on the oldest spill file while the batch it needs sits in a newer one, and every thread parks: the query
//! neither ends nor fails (apache/datafusion#24883, fixed after 55). A rebuild of 10 million operations
//! under a 1 GiB limit stopped that way. A repartition holds about one batch per output channel (its gate
//! stops the inputs while every channel has data), so counting its memory without refusing it keeps the
//! pool's total honest: the sorts and aggregations, which can spill safely, give way instead.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};

/// A pool that grants a repartition whatever it asks and leaves every other consumer to `inner`.
#[derive(Debug)]
pub struct RepartitionNeverSpills {
    inner: Arc<dyn MemoryPool>,
}

impl RepartitionNeverSpills {
    pub fn new(inner: Arc<dyn MemoryPool>) -> Self {
        RepartitionNeverSpills { inner }
    }
}

/// DataFusion names a repartition's consumers `RepartitionExec[<output partition>]`.
fn is_repartition(consumer: &MemoryConsumer) -> bool {
    consumer.name().starts_with("RepartitionExec")
}

impl fmt::Display for RepartitionNeverSpills {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (repartitions never refused)", self.inner)
    }
}

impl MemoryPool for RepartitionNeverSpills {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            return Ok(());
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_repartition_is_counted_but_never_refused_and_others_still_are() {
        let pool: Arc<dyn MemoryPool> = Arc::new(RepartitionNeverSpills::new(Arc::new(GreedyMemoryPool::new(100))));
        let repartition = MemoryConsumer::new("RepartitionExec[0]").with_can_spill(true).register(&pool);
        let sorter = MemoryConsumer::new("ExternalSorter[0]").with_can_spill(true).register(&pool);
        repartition.try_grow(150).expect("a repartition past the limit is granted");
        assert_eq!(pool.reserved(), 150, "and counted");
        assert!(sorter.try_grow(1).is_err(), "the others see the pool full");
        repartition.shrink(150);
        sorter.try_grow(100).expect("room again once the repartition gives it back");
    }
}
