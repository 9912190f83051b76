@testable import BerthServer
import Foundation
import Testing

@Suite struct SchedulerTests {
    private let four = Date(timeIntervalSince1970: 1_795_665_600)  // 2026-11-26T04:00:00Z

    @Test func theNextMinuteIsTheFirstBoundaryAfterNow() {
        #expect(Scheduler.nextMinute(after: four.addingTimeInterval(-0.5), last: nil) == four)
        #expect(Scheduler.nextMinute(after: four, last: nil) == four.addingTimeInterval(60))
        #expect(Scheduler.nextMinute(after: four.addingTimeInterval(59.9), last: four) == four.addingTimeInterval(60))
    }

    @Test func aClockSteppedBackDoesNotTickAMinuteTwice() {
        // 04:00 was ticked at 04:00:00.2; the clock then stepped back 2 s, to 03:59:58.2.
        #expect(Scheduler.nextMinute(after: four.addingTimeInterval(-1.8), last: four) == four.addingTimeInterval(60))
        // Four minutes back: the minutes come again, and none is ticked before 04:01.
        #expect(Scheduler.nextMinute(after: four.addingTimeInterval(-240), last: four) == four.addingTimeInterval(60))
    }

    @Test func aClockSetRightFromFarAheadIsFollowed() {
        // 04:00 was ticked on a clock days ahead; set right, schedules go on from now, not in days.
        let now = four.addingTimeInterval(-3 * 86_400 + 10)
        #expect(Scheduler.nextMinute(after: now, last: four) == four.addingTimeInterval(-3 * 86_400 + 60))
    }

    @Test func aClockSteppedForwardSkipsTheMinutesBetween() {
        #expect(Scheduler.nextMinute(after: four.addingTimeInterval(3600.5), last: four) == four.addingTimeInterval(3660))
    }
}
