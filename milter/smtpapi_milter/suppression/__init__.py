"""The suppression list: recipients mail is not sent to (SPEC 14)."""
