//! The conformance suite: every rule of the Store API, written once and run against
//! every backend (`conformance_suite!(make_harness)` in a backend's tests).
//!
//! A backend supplies a [`Harness`]: a fresh, empty store per test, plus two things only
//! the backend can do: edit an event behind the store's back (to prove `verify` catches
//! it) and close and reopen the store (to prove the chain continues).

pub mod cases;
pub mod model;
pub mod stream_cases;
pub mod subscriptions;
pub mod workloads;

use crate::store::Store;
use async_trait::async_trait;

/// What a backend gives the suite.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's store.
    type Store: Store + Clone + 'static;
    /// The store under test (fresh and empty at the start of each test).
    fn store(&self) -> &Self::Store;
    /// Replaces the `data` of the event at `position` in the database, bypassing annal.
    async fn tamper_data(&self, position: u64, data: &str);
    /// Closes the store and opens it again on the same data.
    async fn reopen(&mut self);
}

/// Instantiates the whole conformance suite as tests, given a path to an
/// `async fn() -> impl Harness` that returns a fresh harness.
///
/// `conformance_suite!(make, skip_unless = ready)` makes each test return at once (after
/// `ready`, a `fn() -> bool`, has said why, e.g. on stderr) when `ready()` is false: for
/// backends that need a server the environment may not provide.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@all $make; {});
    };
    ($make:path, skip_unless = $ready:path) => {
        $crate::conformance_suite!(@all $make; {
            if !$ready() {
                return;
            }
        });
    };
    (@all $make:path; $guard:block) => {
        $crate::conformance_suite!(@cases $make; $guard;
            appends_get_contiguous_positions_and_versions,
            store_fills_in_defaults,
            data_and_metadata_come_back_byte_for_byte,
            expected_version_is_checked_for_every_variant,
            conflicting_append_writes_nothing,
            appending_with_another_aggregate_type_is_rejected,
            retried_append_with_same_event_ids_writes_nothing_again,
            reused_event_id_with_different_content_is_rejected,
            batch_with_one_invalid_event_writes_nothing,
            bad_input_gets_typed_errors_and_writes_nothing,
            transaction_commits_appends_and_checkpoint_together,
            transaction_with_one_conflict_writes_nothing,
            checkpoint_conflict_writes_nothing,
            checkpoints_keep_status_and_errors,
            aggregate_reads_page_forwards_and_backwards,
            read_all_filters_by_every_field,
            events_are_found_by_id,
            head_tracks_last_position_overall_and_by_aggregate_type,
            snapshots_load_latest_at_or_below_for_their_tag,
            verify_accepts_an_intact_chain_whole_and_by_range,
            verify_detects_an_event_edited_behind_the_store,
            chain_and_positions_continue_after_reopen,
            sixteen_writers_racing_on_one_aggregate_win_each_version_once,
            eight_writers_while_a_reader_tails_see_every_position_once_in_order,
            a_conflict_does_not_fail_appends_committed_with_it,
            streaming_reads_page_through_the_whole_log,
            recorded_at_never_decreases_with_position,
            wait_for_head_wakes_on_commit,
        );
        #[test]
        fn random_operation_sequences_match_an_in_memory_model() {
            $guard
            $crate::testkit::model::check(|| $make());
        }
    };
    (@cases $make:path; $guard:block; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $guard
                $crate::testkit::cases::$case($make().await).await;
            }
        )*
    };
}

/// Instantiates the stream-rule cases ([`stream_cases`]) as tests, like
/// [`conformance_suite!`]: for backends whose writer keeps stream records (not for a
/// client of a server, whose stream routes are tested with the server).
#[macro_export]
macro_rules! stream_suite {
    ($make:path) => {
        $crate::stream_suite!(@all $make; {});
    };
    ($make:path, skip_unless = $ready:path) => {
        $crate::stream_suite!(@all $make; {
            if !$ready() {
                return;
            }
        });
    };
    (@all $make:path; $guard:block) => {
        $crate::conformance_suite!(@cases $make; $guard;
            stream_records_match_what_the_events_say,
            the_store_refuses_appends_to_a_tombstoned_stream,
            a_soft_deleted_stream_written_again_shows_only_its_new_events,
            a_stream_append_without_a_type_takes_the_streams_own_or_its_category,
        );
    };
}

/// Instantiates the subscription cases (subscriptions, projections, triggers, consumer
/// groups: [`subscriptions`]) as tests, like [`conformance_suite!`], with the same
/// optional `skip_unless = ready`.
#[macro_export]
macro_rules! subscription_suite {
    ($make:path) => {
        $crate::subscription_suite!(@all $make; {});
    };
    ($make:path, skip_unless = $ready:path) => {
        $crate::subscription_suite!(@all $make; {
            if !$ready() {
                return;
            }
        });
    };
    (@all $make:path; $guard:block) => {
        $crate::subscription_suite!(@cases $make; $guard;
            a_subscription_delivers_history_then_live_without_gap_or_duplicate,
            filters_and_an_aggregate_id_prefix_choose_events_and_the_position_reaches_the_head,
            eight_concurrent_writers_and_a_subscriber_that_sees_the_total_order,
            a_consumer_that_does_not_read_never_makes_writers_wait,
            a_killed_consumer_restarts_from_its_checkpoint_missing_nothing,
            a_handler_failing_every_third_call_handles_every_event_once_in_order,
            an_event_that_keeps_failing_faults_the_projection_or_is_skipped_by_policy,
            a_rebuild_under_live_load_replays_everything_then_goes_live,
            lag_is_the_head_minus_the_checkpoint_for_every_listed_projection,
            a_trigger_reacts_once_with_causation_and_correlation,
            a_consumer_group_of_three_keeps_each_aggregate_in_order_when_a_member_leaves,
            partition_leases_are_exclusive_and_change_hands_with_a_higher_token,
            a_group_of_three_members_with_one_leaving_and_one_crashing_loses_nothing,
        );
    };
    (@cases $make:path; $guard:block; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $guard
                $crate::testkit::subscriptions::$case($make().await).await;
            }
        )*
    };
}
