//! First come, first served sends from one worker to another.
//!
//! A worker forwards each request for a range another worker owns from the request's own task,
//! through a bounded mailbox. While that mailbox is full a sender sleeps and tries again; without
//! a line, a later request (an APPEND right behind another on the same connection) could find
//! room first and reach the owner ahead of an earlier one, which the owner answers with
//! `OFFSET_GAP`. A [`SendLine`] per target worker hands out tickets in call order and lets only
//! the oldest ticket still waiting send. A ticket whose task was dropped is skipped, so a
//! cancelled send never holds the line.

use std::collections::BTreeSet;

/// Tickets for the sends to one worker, served in the order they were taken.
#[derive(Debug, Default)]
pub struct SendLine {
    next_ticket: u64,
    /// The ticket whose turn it is.
    turn: u64,
    /// Tickets above `turn` given up before their turn came.
    abandoned: BTreeSet<u64>,
}

impl SendLine {
    /// Takes the next ticket.
    pub fn take(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    /// Whether `ticket` may send now.
    pub fn is_turn(&self, ticket: u64) -> bool {
        self.turn == ticket
    }

    /// `ticket` is done (sent, failed or given up): the next one still waiting gets the turn.
    pub fn release(&mut self, ticket: u64) {
        if ticket == self.turn {
            self.turn += 1;
            while self.abandoned.remove(&self.turn) {
                self.turn += 1;
            }
        } else if ticket > self.turn {
            self.abandoned.insert(ticket);
        }
    }

    /// Tickets taken and not yet released.
    pub fn waiting(&self) -> u64 {
        self.next_ticket - self.turn - self.abandoned.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_send_in_the_order_they_were_taken() {
        let mut line = SendLine::default();
        let first = line.take();
        let second = line.take();
        assert!(line.is_turn(first));
        assert!(
            !line.is_turn(second),
            "a later send waits for the earlier one"
        );
        line.release(first);
        assert!(line.is_turn(second));
        line.release(second);
        assert_eq!(line.waiting(), 0);
        let third = line.take();
        assert!(line.is_turn(third), "an empty line sends at once");
    }

    #[test]
    fn a_ticket_given_up_before_its_turn_is_skipped() {
        let mut line = SendLine::default();
        let tickets: Vec<u64> = (0..4).map(|_| line.take()).collect();
        line.release(tickets[2]);
        line.release(tickets[1]);
        assert!(line.is_turn(tickets[0]));
        assert_eq!(line.waiting(), 2);
        line.release(tickets[0]);
        assert!(
            line.is_turn(tickets[3]),
            "the two given up are skipped together"
        );
        line.release(tickets[3]);
        assert_eq!(line.waiting(), 0);
    }
}
