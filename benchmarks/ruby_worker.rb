# frozen_string_literal: true

# A real Ruby delayed_job worker for the benchmarks: ActiveRecord + delayed_job_active_record,
# quiet logs, no-op jobs. Prints one JSON line: {"jobs": N, "seconds": S, "cpu": S} (work time only,
# after the connection is up).
#
#   ruby ruby_worker.rb URL TABLE N [USERS_TABLE]
#
# USERS_TABLE: where the `User` records live that `user.delay.noop` rows call `noop` on.
# URL: mysql2://…, postgresql://…, or sqlite3:/path/to/file.db

require "json"
require_relative "ruby_connect"

url, table, count, users = ARGV
abort("usage: ruby_worker.rb URL TABLE N") unless url && table && count

class NoopJob
  def perform; end
end

class SleepJob
  attr_accessor :seconds

  def perform
    sleep(seconds.to_f)
  end
end

class User < ActiveRecord::Base
  def noop; end
end

connect_delayed_job(url, table)
User.table_name = users if users
Delayed::Worker.sleep_delay = 0
Delayed::Job.count # connect and load the schema before the clock starts

cpu = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
succeeded, failed = Delayed::Worker.new(quiet: true).work_off(count.to_i)
seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
cpu = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) - cpu
puts JSON.generate(jobs: succeeded, failed: failed, seconds: seconds, cpu: cpu)
